"""Every Parakeet family through the whole conversion (`convert`: the DAG's steps in the DAG's venvs).

Tiny checkpoints are built from NeMo configs at test time (random weights, the families' shapes);
the plain RNNT one is the committed trained fixture. Each must come out with the figures its own
config implies, pass every gate (fp32 tokens identical to NeMo), and load in sherpa-onnx.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from conftest import ROOT, run_cli, stage_python
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
    args = ["convert", str(family_checkpoints[family]), str(out), "--lengths", "1", "--no-runtime-matrix"]
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
    # The built-in set: the four clips and two long ones made of them (>= 30 s, >= 60 s).
    assert [c["clip"] for c in v["clips"]] == ["clip01", "clip02", "clip03", "clip04", "long30s", "long60s"]
    assert list(v["by_length"]) == ["< 30 s", "30-60 s", ">= 60 s"]
    # The ONNX graphs' free-running decode gives NeMo's transcribe() tokens on every clip but where transcribe()
    # itself parted from NeMo's modules (recorded; on the 61 s clip of the random 0.6b shape, at its last frame).
    parted = {d["clip"] for d in fp32["stepwise"]["transcribe_divergence"]}
    assert fp32["decoding"]["clips"] == 6 and all(c["exact"] or c["clip"] in parted
                                                  for c in fp32["decoding"]["per_clip"])
    assert max(fp32["max_abs_diff"].values()) <= 1e-4
    assert fp32["sherpa"]["ok"] and len(fp32["sherpa"]["texts"]) == 6
    if trained:  # a model that transcribes its clips: NeMo, the ONNX decoder and sherpa-onnx agree with the texts
        assert v["by_length"]["< 30 s"]["NeMo WER vs reference"] == 0.0
        assert v["by_length"]["< 30 s"]["int8 WER vs fp32"] <= 0.05
        assert fp32["sherpa"]["wer_vs_nemo_gated"] <= 0.35 and len(fp32["sherpa"]["gated_clips"]) >= 4


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


# Valid checkpoints the fixtures do not cover: other seeds, other widths, plain RNNT with random weights (which
# emits near-equal logits on every frame). Each must convert: where ONNX and NeMo part at a float tie, the tie is
# recorded, not refused.
UNSEEN = [
    {"name": "tdt-0.6b-seed7-w48", "family": "tdt-0.6b", "seed": 7,
     "arch": {"d_model": 48, "pred_hidden": 32, "joint_hidden": 48}},
    {"name": "tdt-ctc-seed11-w96", "family": "tdt-ctc", "seed": 11,
     "arch": {"d_model": 96, "pred_hidden": 96, "joint_hidden": 80}},
    {"name": "rnnt-seed5-w40", "vocab": 128, "mels": 80, "durations": [], "seed": 5,
     "arch": {"d_model": 40, "pred_hidden": 40, "joint_hidden": 40}},
    {"name": "tdt-1.1b-seed3-w56", "family": "tdt-1.1b", "seed": 3,
     "arch": {"d_model": 56, "pred_hidden": 48, "joint_hidden": 56}},
]


@pytest.fixture(scope="module")
def unseen_checkpoints(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("unseen")
    items = [{**{k: v for k, v in u.items() if k != "name"}, "out": str(d / f"{u['name']}.nemo")} for u in UNSEEN]
    proc = subprocess.run([str(stage_python("nemo")), str(ROOT / "tests" / "fixtures" / "build_tiny_model.py"),
                           "--out", str(d), "--many", json.dumps(items)], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {u["name"]: d / f"{u['name']}.nemo" for u in UNSEEN}


@pytest.mark.parametrize("name", [u["name"] for u in UNSEEN])
def test_valid_checkpoints_of_unseen_shapes_convert_with_their_ties_recorded(name, unseen_checkpoints, tmp_path):
    out = tmp_path / "bundle"
    proc = run_module(["convert", str(unseen_checkpoints[name]), str(out), "--variants", "fp32", "--lengths", "1",
                       "--no-runtime-matrix", "--sherpa-wer-max", "none"], capture_output=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    v = json.loads((out / "validation.json").read_text())
    sw = v["variants"]["fp32"]["stepwise"]
    gate = next(g for g in v["gates"] if g["gate"] == "fp32: greedy decoding == NeMo step by step")
    assert v["passed"] and gate["passed"] and sw["mismatches"] == [] and sw["steps"] > 0
    for tie in sw["ties"]:  # each recorded tie is one the measured difference explains
        assert tie["margin"] <= min(2 * tie["logit_diff"], sw["tie_max"]) and tie["nemo"] != tie["onnx"]
    assert f"{len(sw['ties'])} ties in {sw['steps']} steps" in gate["value"]
    # NeMo's transcribe() may itself part from its modules at a near-tie (random weights: near-equal logits);
    # recorded with the margin, and within the near-tie bound.
    nemo_gate = next(g for g in v["gates"] if g["gate"] == "fp32: NeMo transcribe() == its modules step by step")
    assert nemo_gate["passed"]
    for d in sw["transcribe_divergence"]:  # or at the clip's last frame, where NeMo's decoder ends by its own rule
        assert d["margin"] is None or d["margin"] <= 0.01 * d["scale"] or d["frame"] == d["last_frame"]
    # sherpa-onnx on its own kaldi-native-fbank features, by its own greedy rule: the reference decoder gives its
    # tokens and timestamps, or the two part at a near-tie (on random weights: TDT durations within 1e-3).
    fr = v["variants"]["fp32"]["sherpa_frontend"]
    assert fr["failed"] == 0 and fr["exact"] + fr["ties"] == len(v["clips"]) == 6
    md = (out / "VALIDATION.md").read_text()
    assert "Decoding parity step by step" in md
    print(f"{name}: {sw['steps']} steps, {len(sw['ties'])} ties, max logit difference {sw['max_logit_diff']}, "
          f"free-running exact clips {v['variants']['fp32']['decoding']['exact_clips']}/4, transcribe() parted "
          f"{[(d['clip'], d['margin'], d['scale']) for d in sw['transcribe_divergence']]}; sherpa-onnx on its own "
          f"features {fr['exact']}/4 exact, ties "
          f"{[(c['clip'], c['divergence']['choice'], c['divergence']['margin']) for c in fr['clips'] if c['tie']]}")
