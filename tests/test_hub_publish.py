"""The Hugging Face Hub target (nemo2sherpa.hubtarget): the trained fixture's fp32 and int8 published through the real
huggingface_hub client to the loopback Hub (tests/hubserver.py: repo create, preupload, LFS batch and upload, commit),
read back with snapshot_download and decoded by sherpa-onnx; a second publish makes no commit; a repo missing a
variant is found by the target's manifest (what the refresh DAG asks) and repaired; a refused token, a namespace the
token may not write to and a Hub that throttles or is down are classified."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest

from conftest import last_json, run_cli
from nemo2sherpa import PIPELINE_VERSION
from nemo2sherpa.errors import InputError, TransientError
from nemo2sherpa.records import Export, Source, Validation, ValidationSummary
from nemo2sherpa.targets import published_state, publish_to

TOKEN = "hf_" + "wr1te" * 7
REPOS = {"fp32": "acme/sherpa-onnx-nemo-tiny-tdt", "int8": "acme/sherpa-onnx-nemo-tiny-tdt-int8"}


@pytest.fixture()
def hub_run(validated, source_manifest, fake_hub, tmp_path, monkeypatch):
    """A copy of the validated fixture bundle, its Source as a registry model from a Hub repo (the registry gives
    the card its license and languages), and a write token of alice, a member of acme."""
    from nemo2sherpa.registry import load_registry

    d = tmp_path / "run"
    shutil.copytree(validated / "bundle", d / "bundle")
    shutil.copytree(validated / "reference", d / "reference")
    reg = tmp_path / "models.toml"
    reg.write_text('["tiny-tdt"]\nrepo_id = "nvidia/tiny-tdt"\nlicense = "CC-BY-4.0"\nlanguages = ["en"]\n')
    monkeypatch.setenv("NEMO2SHERPA_REGISTRY", str(reg))
    load_registry.cache_clear()
    src = Source.from_json(json.loads(Path(source_manifest).read_text()))
    src = dataclasses.replace(src, name="tiny-tdt", registry="tiny-tdt", repo_id="nvidia/tiny-tdt",
                              revision="c0ffee" + "1" * 34)
    fake_hub.add_token(TOKEN, user="alice", orgs=("acme",), write=True)
    yield d, src
    load_registry.cache_clear()


def _target(private: bool = False, token: str = TOKEN, namespace: str = "acme", reference: Path | None = None):
    from nemo2sherpa.hubtarget import HubTarget, hub_api

    return HubTarget(hub_api(token), namespace, private, reference)


def _publish(d: Path, src: Source, variants: list[str], run_id: str, **kw):
    validated = Validation.read(d / "bundle")
    return publish_to(_target(reference=d / "reference", **kw), d / "bundle", src, variants, run_id,
                      ValidationSummary(passed=validated.passed, gates=len(validated.gates or [])), {})


def test_each_variant_is_a_hub_repo_that_sherpa_onnx_decodes_and_a_second_publish_commits_nothing(
        hub_run, fake_hub, tmp_path, caplog):
    from huggingface_hub import snapshot_download

    from nemo2sherpa.archive import test_wavs
    from nemo2sherpa.variants import VARIANTS

    d, src = hub_run
    caplog.set_level(logging.INFO, logger="nemo2sherpa.targets")
    result = _publish(d, src, ["fp32", "int8"], "run-1", private=True)
    printed = caplog.text
    assert sorted(result.commits) == sorted(REPOS.values()) and not result.skipped and result.announce
    assert [c["repo"] for c in fake_hub.commits] == [REPOS["fp32"], REPOS["int8"]]  # one commit a repo
    assert all(f"  commit {sha}  {repo}" in printed for repo, sha in result.commits.items())
    assert result.to_json()["commits"] == result.commits
    assert TOKEN not in printed
    validated = Validation.read(d / "bundle")
    digests = {f.name: f.sha256 for f in validated.files}
    wavs = test_wavs(Export.read(d / "reference"), set(validated.known_clips))
    for variant, repo in REPOS.items():
        assert fake_hub.repos[repo].private
        got = Path(snapshot_download(repo, token=TOKEN, local_dir=tmp_path / "dl" / variant, endpoint=fake_hub.url))
        names = sorted(str(p.relative_to(got)) for p in got.rglob("*") if p.is_file() and ".cache" not in p.parts)
        graphs = [p.name for p in (d / "bundle").iterdir() if p.name in VARIANTS[variant].published]
        assert names == sorted([*graphs, "tokens.txt", "bpe.vocab", "README.md", "manifest.json", ".gitattributes",
                                "test_wavs/trans.txt", *(f"test_wavs/{i}.wav" for i in range(len(wavs)))])
        for name in [*graphs, "tokens.txt", "bpe.vocab"]:  # exactly the bytes validate passed
            assert hashlib.sha256((got / name).read_bytes()).hexdigest() == digests[name], name
        card = (got / "README.md").read_text()
        front = card.split("---\n")[1]
        for line in ("license: cc-by-4.0", "library_name: sherpa-onnx", "base_model: nvidia/tiny-tdt",
                     "pipeline_tag: automatic-speech-recognition", "- en", f"- {variant}"):
            assert line in front.splitlines(), (line, front)
        assert f"# {repo.split('/')[1]}" in card and "## Usage" in card and "PASSED" in card
        manifest = json.loads((got / "manifest.json").read_text())
        assert manifest["source"]["revision"] == src.revision and manifest["pipeline_version"] == PIPELINE_VERSION
        assert {f["name"] for f in manifest["files"]} == set(names) - {".gitattributes", "manifest.json"}
        # sherpa-onnx decodes the downloaded repo to what validate recorded for those clips
        out = last_json(run_cli("onnx", "sherpa-decode", "--bundle", str(got), "--variant", variant,
                                *(str(got / f"test_wavs/{i}.wav") for i in range(len(wavs)))))
        want = [validated.variants[variant].sherpa.texts[w.index] for w in wavs]
        assert out["texts"] == want

    again = _publish(d, src, ["fp32", "int8"], "run-2", private=True)
    assert again.skipped and not again.commits and not again.announce
    retried = _publish(d, src, ["fp32", "int8"], "run-1", private=True)  # run-1's publish task, retried
    assert retried.skipped and retried.announce  # its asset event is still due
    assert len(fake_hub.commits) == 2  # the repos hold these bytes of this revision: no commit, not even an empty one


def test_a_repo_missing_a_variant_is_found_and_repaired(hub_run, fake_hub):
    """What the refresh DAG asks of a target (manifest -> published_state): fp32 published, int8 missing; the
    conversion it triggers publishes both; only the int8 repo gets a commit."""
    d, src = hub_run
    target = _target()
    assert published_state(target.manifest(src.name, src.revision), ["fp32"]) == "not published yet"
    _publish(d, src, ["fp32"], "run-1")
    assert published_state(target.manifest(src.name, src.revision), ["fp32", "int8"]) == "published without int8"
    assert published_state(target.manifest(src.name, "an-older-revision"), ["fp32"]) == "not published yet"
    repaired = _publish(d, src, ["fp32", "int8"], "run-2")
    assert list(repaired.commits) == [REPOS["int8"]] and repaired.added_to == "published without int8"
    assert published_state(target.manifest(src.name, src.revision), ["fp32", "int8"]) is None
    assert [c["repo"] for c in fake_hub.commits] == [REPOS["fp32"], REPOS["int8"]]


def test_hub_failures_are_classified(hub_run, fake_hub):
    """A refused token and a namespace the token may not write to fail at once, with the fix; the Hub throttling
    or down is transient (retried), and a retry converges to one commit a repo."""
    d, src = hub_run
    fake_hub.add_token("hf_bob", user="bob", write=True)
    with pytest.raises(InputError, match="refused the token"):
        _publish(d, src, ["fp32"], "r", token="hf_unknown")
    with pytest.raises(InputError, match="may not write to 'acme'"):
        _publish(d, src, ["fp32"], "r", token="hf_bob")
    with pytest.raises(InputError, match="may not write to 'ghost-org'"):
        _publish(d, src, ["fp32"], "r", namespace="ghost-org")
    fake_hub.fail_next(1, status=503, match="/commit/")
    with pytest.raises(TransientError, match="503"):
        _publish(d, src, ["fp32"], "r")
    fake_hub.fail_next(1, status=429, match="/commit/")
    with pytest.raises(TransientError, match="429"):
        _publish(d, src, ["fp32"], "r")
    assert fake_hub.commits == []
    assert list(_publish(d, src, ["fp32"], "r").commits) == [REPOS["fp32"]]
    bundle = d / "bundle"
    (bundle / "tokens.txt").write_text((bundle / "tokens.txt").read_text() + "x 9999\n")
    with pytest.raises(Exception, match="not the file validate passed"):
        _publish(d, src, ["fp32"], "r")
    assert len(fake_hub.commits) == 1


def test_an_unreachable_hub_is_transient(hub_run, fake_hub):
    from nemo2sherpa.hubtarget import HubTarget, hub_api

    d, src = hub_run
    fake_hub.__exit__(None, None, None)
    api = hub_api(TOKEN)
    with pytest.raises(TransientError, match="did not answer"):
        publish_to(HubTarget(api, "acme", reference=d / "reference"), d / "bundle", src, ["fp32"], "r",
                   ValidationSummary(passed=True), {})
