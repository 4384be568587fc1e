"""The evaluation set as an input: a manifest or a folder of any audio, checked before export, recorded."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import pytest

from conftest import FIXTURE, ROOT, last_json, run_cli
from nemo2sherpa.audio import load_clips
from nemo2sherpa.child import run_module


def resampled_stereo(src: Path, dst: Path, factor: int = 2) -> None:
    """src (16 kHz mono 16-bit) as factor x the rate, two channels: each sample repeated (a crude upsampling that
    the pipeline's resampler must undo)."""
    with wave.open(str(src), "rb") as w:
        rate, pcm = w.getframerate(), w.readframes(w.getnframes())
    frames = b"".join(pcm[i:i + 2] * (2 * factor) for i in range(0, len(pcm), 2))
    with wave.open(str(dst), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate * factor)
        w.writeframes(frames)


@pytest.fixture(scope="module")
def folder_set(tmp_path_factory) -> Path:
    """The built-in clips as a user might hand them over: 32 kHz stereo, with a texts.tsv."""
    d = tmp_path_factory.mktemp("evalset")
    for c in load_clips():
        resampled_stereo(c.path, d / f"{c.name}.wav")
    (d / "texts.tsv").write_text("".join(f"{c.name}\t{c.text}\n" for c in load_clips()))
    return d


def source(tmp_path, eval_set: str, *extra: str, check: bool = True):
    return run_cli("download", "source", "--source", str(FIXTURE), "--download-dir", str(tmp_path / "dl"),
                   "--eval-set", eval_set, "--eval-dir", str(tmp_path / "eval"), *extra, check=check)


def test_a_folder_of_other_audio_is_resampled_to_the_models_rate_and_recorded(folder_set, tmp_path):
    m = last_json(source(tmp_path, str(folder_set)))["eval_set"]
    assert m["source"] == str(folder_set) and len(m["clips"]) == 4 and not m["sampled"] and len(m["sha256"]) == 64
    prepared = load_clips(tmp_path / "eval")
    assert [c.text for c in prepared] == [c.text for c in load_clips()]
    for c, want in zip(prepared, load_clips()):
        with wave.open(str(c.path)) as w, wave.open(str(want.path)) as o:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
            assert abs(w.getnframes() - o.getnframes()) <= 2  # the same audio, back at 16 kHz
    assert abs(m["duration_s"] - sum(c["duration_s"] for c in m["clips"])) < 1e-6


def test_a_manifest_with_relative_paths_and_a_cap(folder_set, tmp_path):
    lines = [json.dumps({"audio_filepath": f"{folder_set.name}/{c.name}.wav", "text": c.text, "duration": 3.0})
             for c in load_clips()]
    manifest = folder_set.parent / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n\n")
    a = last_json(source(tmp_path / "a", str(manifest), "--eval-max-clips", "3"))["eval_set"]
    b = last_json(source(tmp_path / "b", str(manifest), "--eval-max-clips", "3"))["eval_set"]
    assert a["sampled"] and a["total_clips"] == 4 and len(a["clips"]) == 3
    assert [c["from"] for c in a["clips"]] == [c["from"] for c in b["clips"]] and a["sha256"] == b["sha256"]


@pytest.mark.parametrize("case", ["missing file", "empty manifest", "not audio", "bad line", "no such set"])
def test_a_bad_evaluation_set_is_one_clear_error_before_any_work(case, folder_set, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    manifest = d / "set.jsonl"
    if case == "missing file":
        manifest.write_text(json.dumps({"audio_filepath": "nowhere.wav", "text": "x"}) + "\n")
        want = "missing, first"
    elif case == "empty manifest":
        manifest.write_text("\n")
        want = "holds no clips"
    elif case == "not audio":
        (d / "notes.wav").write_text("this is not a wav file\n")
        manifest.write_text(json.dumps({"audio_filepath": "notes.wav"}) + "\n")
        want = "is not audio"
    elif case == "bad line":
        manifest.write_text(json.dumps({"audio_filepath": str(folder_set / "clip01.wav")}) + "\n{not json\n")
        want = "line 2 is not a manifest entry"
    else:
        manifest = d / "absent.jsonl"
        want = "no such manifest or folder"
    proc = source(tmp_path, str(manifest), check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("nemo2sherpa: error: ") and want in last
    assert not (tmp_path / "eval").exists() and not (tmp_path / "eval.partial").exists()  # nothing half-made


def test_convert_takes_the_users_evaluation_set(folder_set, tmp_path):
    out = tmp_path / "bundle"
    proc = run_module(["convert", str(FIXTURE), str(out), "--variants", "fp32", "--lengths", "1", "--no-runtime-matrix",
                       "--eval-set", str(folder_set)], capture_output=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    v = json.loads((out / "validation.json").read_text())
    e = v["eval_set"]
    assert v["passed"] and e["source"] == str(folder_set) and len(e["clips"]) == 4 and len(e["sha256"]) == 64
    assert [c["reference"] for c in v["clips"]] == [c.text for c in load_clips()]
    assert v["variants"]["fp32"]["decoding"]["wer_vs_reference"] == 0.0  # the trained fixture, on its own audio
    assert f"Evaluation set: {folder_set}" in (out / "VALIDATION.md").read_text()


OTHER = ROOT / "tests" / "fixtures" / "tiny-tdt-other.nemo"  # trained on other sentences (make fixtures)
OTHER_EVAL = ROOT / "tests" / "fixtures" / "other-eval" / "manifest.jsonl"  # its own evaluation set


def test_a_model_trained_on_other_sentences_converts_with_its_own_evaluation_set(tmp_path):
    """A user's fine-tune: a model that knows none of the built-in clips. With its own evaluation set it converts,
    NeMo, the ONNX graphs and sherpa-onnx all transcribe it right, and sherpa-onnx is token-exact on its own
    features; with the built-in clips, which it cannot transcribe, it converts too: the runtime gates hold only
    the clips a model knows, the step-by-step and own-features gates hold every clip."""
    out = tmp_path / "own"
    proc = run_module(["convert", str(OTHER), str(out), "--variants", "fp32,int8", "--lengths", "1",
                       "--no-runtime-matrix", "--eval-set", str(OTHER_EVAL)], capture_output=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    v = json.loads((out / "validation.json").read_text())
    assert v["passed"] and v["eval_set"]["source"] == str(OTHER_EVAL) and len(v["clips"]) == 4
    for name in ("fp32", "int8"):
        x = v["variants"][name]
        assert x["decoding"]["wer_vs_reference"] == 0.0 and x["sherpa"]["wer_vs_reference"] == 0.0
        assert x["sherpa_frontend"]["exact"] == 4 and x["sherpa_frontend"]["ties"] == 0  # token-exact, every clip
        t = x["timestamps"]  # sherpa-onnx's token times against NeMo's own, on the same tokens
        assert len(t["clips_compared"]) == 4 and t["tokens"] > 0 and abs(t["mean_offset_s"]) <= 0.08
    md = (out / "VALIDATION.md").read_text()
    assert "4/4 clips exact, 0 near-ties" in md and "mean offset (s)" in md and "| < 30 s | 4 |" in md

    other = tmp_path / "builtin"
    proc = run_module(["convert", str(OTHER), str(other), "--variants", "fp32", "--lengths", "1",
                       "--no-runtime-matrix"], capture_output=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    v = json.loads((other / "validation.json").read_text())
    gates = {g["gate"]: g for g in v["gates"]}
    assert v["passed"] and v["by_length"]["< 30 s"]["NeMo WER vs reference"] > 0.5  # it does not know this audio
    assert gates["fp32: sherpa-onnx WER vs NeMo"]["value"].startswith("not applicable")
    assert v["variants"]["fp32"]["sherpa"]["wer_vs_nemo"] > 0  # reported: noise that another front end changes
    assert gates["fp32: greedy decoding == NeMo step by step"]["passed"]
    fr = v["variants"]["fp32"]["sherpa_frontend"]
    assert fr["failed"] == 0 and fr["exact"] + fr["ties"] == 6
    # The encoder does not depend on the evaluation set: the built-in one's 61 s clip grew NeMo's positional table
    # before export, which the graph used to carry; its positions are computed in the graph now (positions.py).
    assert (other / "encoder.onnx").read_bytes() == (out / "encoder.onnx").read_bytes()
