"""Model facts come from the checkpoint's config; unsafe or non-transducer checkpoints are refused."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import tarfile

import pytest

from conftest import FIXTURE, RNNT_FIXTURE, ROOT
from nemo2sherpa.errors import InputError
from nemo2sherpa.modelspec import FAMILIES, ModelSpec, read_nemo_config, safe_nemo_members
from nemo2sherpa.registry import load_registry
from nemo2sherpa.source import classify


def test_spec_from_fixture_config():
    spec = ModelSpec.from_config(read_nemo_config(FIXTURE))
    trained = json.loads(FIXTURE.with_suffix(".json").read_text())  # the training record beside the checkpoint
    assert spec.model_class == "EncDecRNNTBPEModel"
    assert (spec.feat_dim, spec.vocab_size, spec.durations) == (80, trained["vocab_size"], (0, 1, 2, 3, 4))
    assert (spec.pred_rnn_layers, spec.pred_hidden, spec.subsampling_factor) == (2, trained["d_model"], 8)
    assert (spec.enc_hidden, spec.encoder_layers) == (trained["d_model"], trained["layers"])
    assert spec.normalize_type == "per_feature"
    assert spec.joiner_output_dim == 64 + 1 + 5 and spec.is_tdt


def test_plain_rnnt_spec_has_no_durations():
    spec = ModelSpec.from_config(read_nemo_config(RNNT_FIXTURE))
    assert spec.durations == () and not spec.is_tdt and spec.joiner_output_dim == spec.vocab_size + 1
    spec.check_sherpa_compatible()  # nothing to refuse


def test_durations_other_than_0_to_n_are_refused_with_the_reason():
    spec = ModelSpec.from_dict({**ModelSpec.from_config(read_nemo_config(FIXTURE)).to_dict(), "durations": [0, 2, 4, 8]})
    with pytest.raises(InputError, match=r"durations \[0, 2, 4, 8\] are not \[0, 1, 2, 3\].*frames to skip"):
        spec.check_sherpa_compatible()


def test_ctc_model_is_refused_naming_its_class():
    cfg = {"target": "nemo.collections.asr.models.ctc_bpe_models.EncDecCTCModelBPE", "preprocessor": {"features": 80}}
    with pytest.raises(InputError, match="EncDecCTCModelBPE.*not a transducer"):
        ModelSpec.from_config(cfg)


def _tar_with(tmp_path, member: tarfile.TarInfo, data: bytes = b"x"):
    p = tmp_path / "evil.nemo"
    with tarfile.open(p, "w") as tf:
        tf.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return p


def test_path_traversal_and_links_refused_before_extraction(tmp_path):
    m = tarfile.TarInfo("../../etc/evil")
    m.size = 1
    with pytest.raises(InputError, match="unsafe member"):
        safe_nemo_members(_tar_with(tmp_path, m))
    link = tarfile.TarInfo("model_config.yaml")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with pytest.raises(InputError, match="unsafe member"):
        safe_nemo_members(_tar_with(tmp_path, link))


@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_a_nemo_unpacks_byte_for_byte_by_kernel_copy_or_stream(tmp_path, mode):
    """unpack_nemo: NeMo's own uncompressed archives by byte ranges (copy_file_range), a compressed one by
    streaming; the same files either way."""
    import io
    import os

    from nemo2sherpa.modelspec import unpack_nemo

    files = {"model_config.yaml": b"a: 1\n", "model_weights.ckpt": os.urandom(3 << 20), "sub/tok.model": b"x" * 7}
    path = tmp_path / f"m-{mode.replace(':', '')}.nemo"
    with tarfile.open(path, mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    out = tmp_path / "out"
    out.mkdir()
    assert sorted(unpack_nemo(path, out)) == sorted(f"./{n}" for n in files)
    assert {n: (out / n).read_bytes() for n in files} == files


def test_truncated_nemo_is_refused(tmp_path):
    p = tmp_path / "cut.nemo"
    p.write_bytes(FIXTURE.read_bytes()[:5000])
    with pytest.raises(InputError, match="truncated|corrupt|not a readable"):
        read_nemo_config(p)


def test_url_switches_tdt_exactly_for_tdt_models():
    tdt, rnnt = FAMILIES["tdt"], FAMILIES["rnnt"]
    assert "tdt" in tdt.url("file:///m/custom.nemo")
    assert "tdt" not in rnnt.url("https://huggingface.co/acme/rnnt-not-tdt")
    assert tdt.url("https://huggingface.co/nvidia/parakeet-tdt-1.1b").endswith("parakeet-tdt-1.1b")


def test_source_classification(tmp_path):
    assert classify("parakeet-tdt-1.1b") == ("registry", "parakeet-tdt-1.1b")
    assert classify("nvidia/parakeet-tdt-1.1b") == ("hub", "nvidia/parakeet-tdt-1.1b")
    assert classify(str(FIXTURE))[0] == "local"
    for bad, msg in [("", "empty"), ("/no/such/model.nemo", "no such .nemo"), ("not a model!", "neither")]:
        with pytest.raises(InputError, match=msg):
            classify(bad)


def test_registry_entries_are_convertible_and_the_readme_lists_them():
    """Every registry entry is something the converter accepts (a repo id, durations sherpa-onnx follows, known
    variants, a string pin if any), and the README's list of the form's models is the registry's."""
    import re

    from nemo2sherpa.source import REPO_ID
    from nemo2sherpa.variants import VARIANT_FILES

    reg = load_registry()
    for name, e in reg.items():
        assert REPO_ID.match(e.repo_id), name
        assert e.durations is None or e.durations == list(range(len(e.durations))), name
        assert set(e.variants or []) <= set(VARIANT_FILES), name
        assert e.feat_dim in (None, 80, 128), name
    readme = (ROOT / "README.md").read_text()
    listed = re.search(r"models \(`include/nemo2sherpa/models.toml`:\s*([^)]*)\)", readme).group(1)
    assert sorted(x.strip() for x in listed.split(",")) == sorted(reg)


def test_a_teams_registry_with_a_misspelt_key_or_a_wrong_value_is_refused_by_name(tmp_path, monkeypatch):
    """NEMO2SHERPA_REGISTRY points at a team's own list: each entry is a typed record (registry.RegistryEntry), so a
    key nobody reads (a typo) or a figure of the wrong type is refused naming the file, the model and the key, where
    a dict would have let the figure go unchecked."""
    from nemo2sherpa.records import RecordError

    reg = tmp_path / "models.toml"
    monkeypatch.setenv("NEMO2SHERPA_REGISTRY", str(reg))
    for body, match in [('["ours"]\nrepo_id = "acme/m"\nvocab_sise = 1024\n', r"\[ours\]: unknown field\(s\) vocab_sise"),
                        ('["ours"]\nrepo_id = "acme/m"\nfeat_dim = "80"\n', r"\[ours\]\.feat_dim"),
                        ('["ours"]\nrevision = "main"\n', r"\[ours\]: field 'repo_id' missing")]:
        reg.write_text(body)
        load_registry.cache_clear()
        with pytest.raises(RecordError, match=match):
            load_registry()
    reg.write_text('["ours"]\nrepo_id = "acme/m"\nvocab_size = 1024\nlicense = "MIT"\n')
    load_registry.cache_clear()
    assert load_registry()["ours"].vocab_size == 1024 and load_registry()["ours"].license == "MIT"
    monkeypatch.delenv("NEMO2SHERPA_REGISTRY")
    load_registry.cache_clear()


def test_registry_figures_are_checked_against_the_checkpoint():
    """A registry model whose upstream config changed shape is refused before NeMo loads it."""
    reg = load_registry()
    spec = ModelSpec.from_config(read_nemo_config(FIXTURE))
    entry = reg["parakeet-tdt-1.1b"]
    with pytest.raises(InputError, match=r"vocab_size 64 \(registry: 1024\).*encoder_layers 2 \(registry: 42\)"):
        entry.check(spec)
    dataclasses.replace(entry, vocab_size=spec.vocab_size, encoder_layers=spec.encoder_layers).check(spec)


@pytest.mark.parametrize("section, key, field", [("encoder", "d_model", "encoder.d_model"),
                                                 ("encoder", "n_layers", "encoder.n_layers")])
def test_a_config_missing_a_field_is_refused_naming_it(section, key, field):
    """Not a bare TypeError from int(None): the field is named."""
    cfg = read_nemo_config(FIXTURE)
    del cfg[section][key]
    with pytest.raises(InputError, match=rf"no usable {re.escape(field)} \(None\)"):
        ModelSpec.from_config(cfg)

