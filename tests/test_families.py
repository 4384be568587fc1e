"""Every Parakeet family through the whole conversion (`convert`: the DAG's steps in the DAG's venvs).

Tiny checkpoints are built from NeMo configs at test time (random weights, the families' shapes);
the plain RNNT one is the committed trained fixture. Each must come out with the figures its own
config implies, pass every gate (fp32 tokens identical to NeMo), and load in sherpa-onnx.
"""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from conftest import run_cli
from nemo2sherpa.child import run_module

# family -> what the converter must derive from that checkpoint's config
EXPECTED = {
    "tdt-1.1b": {"model_class": "EncDecRNNTBPEModel", "feat_dim": 80, "vocab_size": 1024, "joiner_output_dim": 1030,
                 "durations": [0, 1, 2, 3, 4], "pred_rnn_layers": 2, "hybrid": False},
    "tdt-0.6b": {"model_class": "EncDecRNNTBPEModel", "feat_dim": 128, "vocab_size": 1024, "joiner_output_dim": 1030,
                 "durations": [0, 1, 2, 3, 4], "pred_rnn_layers": 2, "hybrid": False},
    "tdt-ctc": {"model_class": "EncDecHybridRNNTCTCBPEModel", "feat_dim": 80, "vocab_size": 1024,
                "joiner_output_dim": 1030, "durations": [0, 1, 2, 3, 4], "pred_rnn_layers": 2, "hybrid": True},
    "rnnt": {"model_class": "EncDecRNNTBPEModel", "feat_dim": 80, "vocab_size": 64, "joiner_output_dim": 65,
             "durations": [], "pred_rnn_layers": 2, "hybrid": False},
}


@pytest.mark.parametrize("family", list(EXPECTED))
def test_family_converts_and_passes_every_gate(family, family_checkpoints, tmp_path):
    want = EXPECTED[family]
    trained = family == "rnnt"
    out = tmp_path / "bundle"
    args = ["convert", str(family_checkpoints[family]), str(out), "--lengths", "1"]
    # Random weights make text meaningless: WER figures are reported, not gated, for those.
    args += ["--variants", "fp32,int8"] if trained else ["--variants", "fp32", "--sherpa-wer-max", "none"]
    proc = run_module(args, capture_output=True)
    assert proc.returncode == 0, proc.stderr[-4000:]

    spec = json.loads((out / "export.json").read_text())["spec"]
    assert {k: spec[k] for k in want} == want
    v = json.loads((out / "validation.json").read_text())
    assert v["passed"] and v["mode"] == "full"
    gates = {g["gate"]: g for g in v["gates"]}
    assert gates["fp32: joiner output dim"]["value"] == want["joiner_output_dim"]
    assert gates["fp32: encoder feat_dim"]["value"] == want["feat_dim"]
    url_gate = gates["fp32: metadata url switches TDT"]
    assert url_gate["passed"] and ("tdt" in url_gate["value"]) == bool(want["durations"])
    assert v["model"]["durations"] == want["durations"]  # recorded; other durations never get past export
    fp32 = v["variants"]["fp32"]
    assert fp32["decoding"]["exact_clips"] == fp32["decoding"]["clips"] == 4
    assert max(fp32["max_abs_diff"].values()) <= 1e-4
    assert fp32["sherpa"]["ok"] and len(fp32["sherpa"]["texts"]) == 4
    if trained:  # a model that transcribes: NeMo, the ONNX decoder and sherpa-onnx agree with the texts
        assert fp32["decoding"]["wer_vs_reference"] == 0.0
        assert v["variants"]["int8"]["decoding"]["wer_vs_fp32"] <= 0.05
        assert fp32["sherpa"]["wer_vs_nemo"] <= 0.35


def test_export_refuses_durations_sherpa_cannot_follow(family_checkpoints, tmp_path):
    proc = run_cli("nemo", "export", "--nemo", str(family_checkpoints["tdt-odd"]), "--bundle", str(tmp_path / "b"),
                   "--reference", str(tmp_path / "r"), check=False)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert "TDT durations [0, 2, 4, 6] are not [0, 1, 2, 3]" in last and "frames to skip" in last
    assert not (tmp_path / "b").exists() and not (tmp_path / "r").exists()


@pytest.mark.parametrize("target", [
    "nemo.collections.asr.models.ctc_bpe_models.EncDecCTCModelBPE",
    "nemo.collections.asr.models.aed_multitask_models.EncDecMultiTaskModel",  # Canary: attention enc-dec
    "nemo.collections.tts.models.fastpitch.FastPitchModel",  # not ASR at all
])
def test_export_refuses_a_model_that_is_not_a_transducer(target, tmp_path):
    p = tmp_path / "model.nemo"
    cfg = f"target: {target}\npreprocessor: {{features: 80}}\n".encode()
    with tarfile.open(p, "w") as tf:
        ti = tarfile.TarInfo("model_config.yaml")
        ti.size = len(cfg)
        tf.addfile(ti, io.BytesIO(cfg))
    proc = run_cli("nemo", "export", "--nemo", str(p), "--bundle", str(tmp_path / "b"), "--reference",
                   str(tmp_path / "r"), check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("nemo2sherpa: error:") and target.rsplit(".", 1)[-1] in lines[-1]
    assert "not a transducer" in lines[-1]
    assert not (tmp_path / "b").exists()
