"""Each stage on the tiny fixture, in the real stage venvs, through the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import FIXTURE, INCLUDE, last_json, run_cli, stage_python
from nemo2sherpa.child import run_module


def test_export_writes_the_split_bundle(exported):
    b = exported / "bundle"
    assert sorted(p.name for p in b.iterdir()) == ["decoder.onnx", "encoder.onnx", "joiner.onnx", "tokens.txt"]
    lines = (b / "tokens.txt").read_text().splitlines()
    assert len(lines) == 65 and lines[-1] == "<blk> 64"
    exp = json.loads((exported / "reference" / "export.json").read_text())
    assert exp["spec"]["vocab_size"] == 64 and len(exp["clips"]) == 4
    assert all(c["nemo_tokens"] for c in exp["clips"])  # NeMo's greedy output recorded for parity


def test_metadata_values_equal_the_config(full_bundle):
    code = ("import json,sys; from pathlib import Path; from nemo2sherpa.metadata import read_metadata;"
            "print(json.dumps([read_metadata(Path(sys.argv[1])/n) for n in ('encoder.onnx','encoder.int8.onnx')]))")
    out = subprocess.run([str(stage_python("onnx")), "-c", code, str(full_bundle / "bundle")], capture_output=True,
                         text=True, check=True, env={"PYTHONPATH": str(INCLUDE)})
    sys.path.insert(0, str(INCLUDE))
    from nemo2sherpa.modelspec import ModelSpec, read_nemo_config

    spec = ModelSpec.from_config(read_nemo_config(FIXTURE))
    for meta in json.loads(out.stdout):
        assert meta["vocab_size"] == str(spec.vocab_size)  # without blank
        assert meta["feat_dim"] == str(spec.feat_dim)
        assert meta["pred_rnn_layers"] == str(spec.pred_rnn_layers)
        assert meta["pred_hidden"] == str(spec.pred_hidden)
        assert meta["subsampling_factor"] == str(spec.subsampling_factor)
        assert meta["normalize_type"] == "per_feature"
        assert "tdt" in meta["url"] and meta["model_type"] == spec.model_class


def test_quantize_makes_smaller_int8_files(full_bundle):
    b = full_bundle / "bundle"
    for m in ("encoder", "decoder", "joiner"):
        assert (b / f"{m}.int8.onnx").stat().st_size < (b / f"{m}.onnx").stat().st_size
    assert not (full_bundle / ".quantize-tmp").exists()


def test_validate_passes_on_a_good_bundle(full_bundle, source_manifest, tmp_path):
    report = tmp_path / "validation.json"
    r = last_json(run_cli("onnx", "validate", "--bundle", str(full_bundle / "bundle"), "--reference",
                          str(full_bundle / "reference"), "--source-json", str(source_manifest), "--report", str(report)))
    assert r["passed"]
    v = json.loads(report.read_text())
    assert v["variants"]["fp32"]["max_abs_diff"]["encoder"] <= 1e-4
    assert v["variants"]["fp32"]["decoding"]["token_match_rate"] == 1.0
    assert all(v["variants"][x]["sherpa"]["ok"] for x in ("fp32", "int8"))


def _broken_copy(full_bundle, tmp_path):
    d = tmp_path / "broken"
    shutil.copytree(full_bundle, d)
    return d


def _set_meta(bundle, key, value):
    code = ("import sys; from pathlib import Path; from nemo2sherpa.metadata import read_metadata, write_metadata;"
            "p=Path(sys.argv[1]); m=read_metadata(p); m[sys.argv[2]]=sys.argv[3]; write_metadata(p, m)")
    for name in ("encoder.onnx", "encoder.int8.onnx"):
        subprocess.run([str(stage_python("onnx")), "-c", code, str(bundle / name), key, value], check=True,
                       env={"PYTHONPATH": str(INCLUDE)})


@pytest.mark.parametrize("breakage, gate", [
    ("url", "metadata url switches TDT"),
    ("feat_dim", "metadata feat_dim"),
    ("blk", "tokens.txt <blk> last"),
])
def test_validate_catches_a_broken_bundle(full_bundle, source_manifest, tmp_path, breakage, gate):
    d = _broken_copy(full_bundle, tmp_path)
    b = d / "bundle"
    if breakage == "url":
        _set_meta(b, "url", "https://huggingface.co/nvidia/parakeet")  # no "tdt": sherpa would exit
    elif breakage == "feat_dim":
        _set_meta(b, "feat_dim", "128")
    else:
        lines = (b / "tokens.txt").read_text().splitlines()
        (b / "tokens.txt").write_text("\n".join(lines[:-1]) + "\n")
    proc = run_cli("onnx", "validate", "--bundle", str(b), "--reference", str(d / "reference"),
                   "--source-json", str(source_manifest), check=False)
    assert proc.returncode == 3, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("nemo2sherpa: validation failed:") and gate in last


def test_benchmark_records_latency_and_gpu_skip_reason(full_bundle, tmp_path):
    out = tmp_path / "benchmark.json"
    run_cli("onnx", "benchmark", "--bundle", str(full_bundle / "bundle"), "--reference", str(full_bundle / "reference"),
            "--lengths", "1,2", "--runs", "3", "--gpu", "--out", str(out))
    r = json.loads(out.read_text())
    for v in ("fp32", "int8"):
        for L in ("1", "2"):
            s = r["cpu"][v]["by_length"][L]
            assert 0 < s["p50_s"] <= s["p95_s"] and s["runs"] == 3
    # The PyPI onnxruntime is CPU-only: the GPU run must say skipped and why, never fall back silently.
    for v in ("fp32", "int8"):
        g = r["gpu"][v]
        if g["status"] == "ok":
            assert g["provider"] == "CUDAExecutionProvider"
        else:
            assert g["status"] == "skipped" and "CUDAExecutionProvider" in g["reason"]


def test_cli_refuses_bad_input_with_one_line(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "nemo2sherpa", "convert", str(tmp_path / "missing.nemo"), str(out)],
                          capture_output=True, text=True, env={"PYTHONPATH": str(INCLUDE), "PATH": ""})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no such .nemo file" in lines[0]
    assert not out.exists()


def test_export_refuses_a_non_transducer_checkpoint(tmp_path):
    import io
    import tarfile

    p = tmp_path / "ctc.nemo"
    cfg = b"target: nemo.collections.asr.models.ctc_bpe_models.EncDecCTCModelBPE\npreprocessor: {features: 80}\n"
    with tarfile.open(p, "w") as tf:
        ti = tarfile.TarInfo("model_config.yaml")
        ti.size = len(cfg)
        tf.addfile(ti, io.BytesIO(cfg))
    proc = run_cli("nemo", "export", "--nemo", str(p), "--bundle", str(tmp_path / "b"), "--reference",
                   str(tmp_path / "r"), check=False)
    assert proc.returncode == 2
    assert "EncDecCTCModelBPE" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "b").exists()


def test_convert_runs_every_stage_in_the_dag_venvs(tmp_path):
    """`make convert`: the whole chain without the scheduler; the bundle appears whole, no publish."""
    out = tmp_path / "bundle"
    proc = run_module(["convert", str(FIXTURE), str(out), "--lengths", "1"], capture_output=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["validation"]["passed"] and r["validation"]["token_match"]["fp32"] == 1.0
    assert {"encoder.onnx", "encoder.int8.onnx", "decoder.int8.onnx", "joiner.int8.onnx", "tokens.txt",
            "validation.json", "benchmark.json"} <= {p.name for p in out.iterdir()}
    assert not (tmp_path / ".bundle.work").exists()
    # A second run into the same (now non-empty) folder is refused before any work.
    again = run_module(["convert", str(FIXTURE), str(out)], capture_output=True)
    assert again.returncode == 2 and "not empty" in again.stderr.strip().splitlines()[-1]
