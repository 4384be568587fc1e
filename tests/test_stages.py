"""Each stage on the tiny fixture, in the real stage venvs, through the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURE, INCLUDE, LONG_RECORDING_S, ROOT, big_layout, last_json, run_cli, stage_python
from nemo2sherpa.child import run_module
from nemo2sherpa.variants import VARIANT_FILES


def test_export_writes_the_split_bundle(exported):
    b = exported / "bundle"
    assert sorted(p.name for p in b.iterdir()) == ["bpe.vocab", "decoder.onnx", "encoder.onnx", "encoder.weights",
                                                  "joiner.onnx", "tokens.txt"]  # the big layout (conftest.BIG_LAYOUT)
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
        # A published model names its checkpoint by file name and sha256, never by the build machine's path.
        digest = hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
        assert meta["url"].startswith(f"nemo:{FIXTURE.name}?sha256={digest}"), meta["url"]
        assert not any(str(ROOT) in v for v in meta.values()), meta


def test_quantize_makes_smaller_int8_files(full_bundle):
    b = full_bundle / "bundle"
    for m in ("encoder", "decoder", "joiner"):  # fp32 with its weights file, in the big layout
        fp32 = sum(p.stat().st_size for p in (b / f"{m}.onnx", b / f"{m}.weights") if p.exists())
        assert (b / f"{m}.int8.onnx").stat().st_size < fp32
    assert not (full_bundle / ".quantize-tmp").exists()


@pytest.mark.parametrize("layout", ["one file", "external weights"])
def test_fp16_variant_is_made_and_passes_every_gate(full_bundle, source_manifest, tmp_path, monkeypatch, layout):
    """fp16 from fp32 (float32 I/O kept, so sherpa-onnx loads it): half the size, every fidelity gate passes,
    sherpa-onnx transcribes it. "external weights" forces the 1.1B layout (encoder.fp16.weights beside it)."""
    b = tmp_path / "bundle"
    shutil.copytree(full_bundle / "bundle", b)
    if layout == "external weights":
        monkeypatch.setenv("NEMO2SHERPA_SINGLE_FILE_MAX", "100000")  # the fp16 encoder (~0.8 MB) is over it
    out = last_json(run_cli("onnx", "make-variant", "fp16", "--bundle", str(b), "--reference",
                            str(full_bundle / "reference")))
    for m in ("encoder", "decoder", "joiner"):  # fp32's size with its weights file (the big layout)
        fp32 = sum(p.stat().st_size for p in (b / f"{m}.onnx", b / f"{m}.weights") if p.exists())
        assert out["files"][f"{m}.fp16.onnx"] < 0.6 * fp32
    assert (b / "encoder.fp16.weights").exists() == (layout == "external weights")
    assert not (tmp_path / ".fp16-tmp").exists() and not list(b.glob(".*inferred*"))
    run_cli("onnx", "metadata", "--bundle", str(b), "--reference", str(full_bundle / "reference"),
            "--source-json", str(source_manifest))
    report = tmp_path / "validation.json"
    r = last_json(run_cli("onnx", "validate", "--bundle", str(b), "--reference", str(full_bundle / "reference"),
                          "--variants", "fp32,fp16", "--source-json", str(source_manifest), "--report", str(report),
                          "--fp16-wer-max", "0.04"))
    assert r["passed"] and r["thresholds"]["fp16_wer_vs_fp32"] == 0.04  # the flag (default 0.05) reached the gate
    v = json.loads(report.read_text())["variants"]["fp16"]
    assert v["decoding"]["wer_vs_fp32"] == 0.0 and v["sherpa"]["wer_vs_nemo"] <= 0.35
    assert 0 < v["max_abs_diff"]["encoder"] < 0.05  # fp16 rounding shows, and stays small


def test_validate_passes_on_a_good_bundle(full_bundle, source_manifest, tmp_path):
    report = tmp_path / "validation.json"
    r = last_json(run_cli("onnx", "validate", "--bundle", str(full_bundle / "bundle"), "--reference",
                          str(full_bundle / "reference"), "--source-json", str(source_manifest), "--report", str(report)))
    assert r["passed"]
    v = json.loads(report.read_text())
    fp32, int8 = v["variants"]["fp32"], v["variants"]["int8"]
    assert all(fp32["max_abs_diff"][m] <= 1e-4 for m in ("encoder", "encoder_clips", "decoder", "joiner"))
    # The trained fixture transcribes: ONNX greedy == NeMo greedy == the reference texts.
    assert fp32["decoding"]["token_match_rate"] == 1.0 and fp32["decoding"]["exact_clips"] == 4
    assert fp32["decoding"]["wer_vs_reference"] == 0.0
    assert [c["text"] for c in fp32["decoding"]["per_clip"]] == [c["reference"] for c in v["clips"]]
    assert int8["decoding"]["wer_vs_fp32"] <= v["thresholds"]["int8_wer_vs_fp32"] == 0.05
    for x in (fp32, int8):
        assert x["sherpa"]["ok"] and len(x["sherpa"]["texts"]) == 4
        assert x["sherpa"]["wer_vs_nemo"] <= v["thresholds"]["sherpa_wer_vs_nemo"]
    names = {g["gate"] for g in v["gates"]}
    for gate in ("fp32: joiner output dim", "fp32: decoder output dim", "fp32: encoder lengths (clips)",
                 "fp32: greedy decoding == NeMo step by step", "int8: WER vs fp32 (drift)", "fp32: sherpa-onnx WER vs NeMo",
                 "int8: metadata url switches TDT"):
        assert gate in names
    md = (tmp_path / "VALIDATION.md").read_text()
    assert md.startswith("# Validation: PASSED (full)") and "| fp32 |" in md and v["clips"][0]["reference"] in md
    # Hotwords: bpe.vocab checked against tokens.txt; sherpa-onnx's beam search healthy, and a list of words
    # nobody said (through bpe.vocab) loads and changes no clip of this model.
    state = {g["gate"]: g for g in v["gates"]}
    assert state["bpe.vocab pieces == tokens.txt"]["passed"]
    for x, name in ((fp32, "fp32"), (int8, "int8")):
        beam = x["sherpa_beam"]
        assert state[f"{name}: sherpa-onnx beam search: no clip empty or collapsed"]["passed"]
        assert beam["collapsed"] == [] and beam["texts"] == x["sherpa"]["texts"] and beam["wer_vs_greedy"] == 0.0
        assert state[f"{name}: sherpa-onnx decodes with hotwords (bpe.vocab)"]["passed"]
        assert len(beam["decoy_hotwords"]["phrases"]) == 5 and beam["decoy_hotwords"]["changed"] == []
        assert not set(" ".join(beam["decoy_hotwords"]["phrases"]).split()) & set(" ".join(beam["texts"]).split())
    assert "Beam search (sherpa-onnx `modified_beam_search`" in md and "| fp32 sherpa beam |" in md
    # sherpa-onnx on its own features: the reference decoder gives its tokens at its timestamps, clip for clip.
    for x, name in ((fp32, "fp32"), (int8, "int8")):
        assert state[f"{name}: sherpa-onnx == reference decoder on its own features"]["passed"]
        assert x["sherpa_frontend"]["exact"] == 4 and all(c["tokens"] > 0 for c in x["sherpa_frontend"]["clips"])
    assert "sherpa-onnx on its own front end" in md
    # The files it passed, by digest (publish uploads exactly these): both variants' files, tokens.txt, bpe.vocab.
    b = full_bundle / "bundle"
    assert {f["name"] for f in v["files"]} == {"tokens.txt", "bpe.vocab", *VARIANT_FILES["fp32"], "encoder.weights",
                                               *VARIANT_FILES["int8"]}  # the big layout's weights file too
    for f in v["files"]:
        assert f["size"] == (b / f["name"]).stat().st_size
        assert f["sha256"] == hashlib.sha256((b / f["name"]).read_bytes()).hexdigest() and f["sha256"] in md


def _broken_copy(full_bundle, tmp_path):
    d = tmp_path / "broken"
    shutil.copytree(full_bundle, d)
    return d


def break_bundle(bundle, *args: str) -> None:
    subprocess.run([str(stage_python("onnx")), str(ROOT / "tests" / "break_bundle.py"), str(bundle), *args],
                   check=True, capture_output=True)


# breakage -> (how, gates that must fail, gates that must still pass). Each gate of validate is shown
# firing on a bundle broken in the way that gate exists to catch.
STEPWISE = "fp32: greedy decoding == NeMo step by step"
BREAKAGES = {
    "url": (["meta", "url", "https://huggingface.co/nvidia/parakeet"],  # no "tdt": sherpa-onnx exits
            ["fp32: metadata url switches TDT", "fp32: sherpa-onnx loads and decodes every clip"],
            ["fp32: greedy decoding == NeMo step by step"]),
    "feat_dim": (["meta", "feat_dim", "128"], ["fp32: metadata feat_dim"], []),
    "normalize": (["meta", "normalize_type", ""],  # sherpa-onnx decodes, silently badly
                  ["fp32: metadata normalize per_feature", "fp32: sherpa-onnx WER vs NeMo",
                   "fp32: sherpa-onnx == reference decoder on its own features"], []),
    "blk": ("drop-blk", ["tokens.txt <blk> last"], []),
    "tokens": (["shuffle-tokens"], ["fp32: sherpa-onnx WER vs NeMo", "int8: sherpa-onnx WER vs NeMo"],
               ["fp32: greedy decoding == NeMo step by step", "fp32: sherpa-onnx loads and decodes every clip"]),
    "encoder": (["noise", "encoder.onnx", "0.01"], ["fp32: encoder max abs diff"], ["fp32: decoder max abs diff"]),
    "decoder": (["noise", "decoder.onnx", "0.01"], ["fp32: decoder max abs diff"], ["fp32: encoder max abs diff"]),
    "joiner": (["joiner-bias", "20", "joiner.onnx"], ["fp32: joiner max abs diff", STEPWISE],
               ["fp32: encoder max abs diff"]),
    "joiner_dim": (["joiner-drop"], ["fp32: joiner output dim"], ["fp32: decoder state dims"]),
    "int8": (["joiner-bias", "20", "joiner.int8.onnx"], ["int8: WER vs fp32 (drift)"], [STEPWISE]),
    "bpe_vocab": (["swap-bpe-vocab"], ["bpe.vocab pieces == tokens.txt"], ["fp32: greedy decoding == NeMo step by step",
                                                                           "tokens.txt <blk> last"]),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_validate_catches_a_broken_bundle(full_bundle, source_manifest, tmp_path, breakage):
    how, must_fail, must_pass = BREAKAGES[breakage]
    d = _broken_copy(full_bundle, tmp_path)
    b = d / "bundle"
    if how == "drop-blk":
        lines = (b / "tokens.txt").read_text().splitlines()
        (b / "tokens.txt").write_text("\n".join(lines[:-1]) + "\n")
    else:
        break_bundle(b, *how)
    report = tmp_path / "validation.json"
    proc = run_cli("onnx", "validate", "--bundle", str(b), "--reference", str(d / "reference"),
                   "--source-json", str(source_manifest), "--report", str(report), check=False)
    assert proc.returncode == 3, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("nemo2sherpa: validation failed:") and must_fail[0] in last
    v = json.loads(report.read_text())
    state = {g["gate"]: g["passed"] for g in v["gates"]}
    assert not v["passed"]
    for g in must_fail:
        assert state.get(g) is False, (g, {k: x for k, x in state.items() if not x})
    for g in must_pass:
        assert state.get(g) is True, (g, state.get(g))
    md = (tmp_path / "VALIDATION.md").read_text()
    assert md.startswith("# Validation: FAILED") and f"| {must_fail[0]} | **FAIL** |" in md


@pytest.mark.parametrize("margin", [1e-7, 0.5])
def test_a_choice_that_differs_from_nemo_passes_only_as_a_tie(exported, tmp_path, margin):
    """NeMo's last decision on clip 0 made another token, ahead of the one the ONNX graphs choose by `margin` in
    NeMo's logits: a float-sized margin is a tie (recorded with clip and step), a real one fails naming both."""
    d = tmp_path / "x"
    shutil.copytree(exported, d)
    break_bundle(d / "reference", "path-choice", str(margin))
    report = tmp_path / "validation.json"
    proc = run_cli("onnx", "validate", "--bundle", str(d / "bundle"), "--reference", str(d / "reference"),
                   "--variants", "fp32", "--mode", "pre", "--report", str(report), check=False)
    v = json.loads(report.read_text())
    sw = v["variants"]["fp32"]["stepwise"]
    gate = next(g for g in v["gates"] if g["gate"] == "fp32: greedy decoding == NeMo step by step")
    first = json.loads((d / "reference" / "export.json").read_text())["clips"][0]
    where = {"clip": first["name"], "step": first["path_steps"] - 1}
    if margin < 1e-3:
        assert proc.returncode == 0 and gate["passed"] and sw["mismatches"] == [], proc.stderr[-2000:]
        assert [{k: t[k] for k in where} for t in sw["ties"]] == [where] and sw["ties"][0]["margin"] <= 1e-6
    else:
        assert proc.returncode == 3 and not gate["passed"] and sw["ties"] == []
        assert [{k: m[k] for k in where} for m in sw["mismatches"]] == [where]
        assert f"clip {where['clip']} step {where['step']}" in gate["detail"] and where["clip"] in proc.stderr


def test_benchmark_records_latency_and_gpu_skip_reason(full_bundle, tmp_path):
    out = tmp_path / "benchmark.json"
    run_cli("onnx", "benchmark", "--bundle", str(full_bundle / "bundle"), "--reference", str(full_bundle / "reference"),
            "--lengths", "1,2", "--runs", "3", "--gpu", "--out", str(out))
    r = json.loads(out.read_text())
    for v in ("fp32", "int8"):
        for engine in ("cpu", "ort_cpu"):  # sherpa-onnx, and onnxruntime over the library's decoder
            for L in ("1", "2"):
                s = r[engine][v]["by_length"][L]
                assert 0 < s["p50_s"] <= s["p95_s"] and s["runs"] == 3 and s["cold_s"] > 0
        assert r["ort_cpu"][v]["provider"] == "CPUExecutionProvider"
        for L in ("1", "2"):  # the encoder alone (a floor under latency that random weights do not distort)
            assert 0 < r["ort_cpu"][v]["encoder_by_length"][L]["p50_s"] and r["ort_cpu"][v]["tokens_by_length"][L] > 0
        assert 20e6 < r["cpu"][v]["peak_rss_bytes"] < 4e9  # the sherpa-onnx child's own peak
    png = out.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000  # the latency plot
    # GPU: onnxruntime-gpu, in its own venv (a child process). Without an NVIDIA GPU and CUDA libraries it still
    # lists the CUDA provider, fails to load it and falls back to CPU: the run must say skipped, with onnxruntime's
    # own reason, and never report CPU timings as CUDA ones.
    g = r["gpu"]
    assert g["runtime"].startswith("onnxruntime 1.31.1 (device build: GPU")
    for v in ("fp32", "int8"):
        x = g["variants"][v]
        if g["device"]:  # nvidia-smi named a GPU: the CUDA provider must be the one that ran
            assert x["status"] == "ok" and x["provider"] == "CUDAExecutionProvider", x
        else:
            assert x["status"] == "skipped" and "by_length" not in x, x
            assert "CUDA provider did not load" in x["reason"] and "onnxruntime: " in x["reason"], x["reason"]


def test_a_child_measures_its_own_peak_rss_not_its_parents():
    """wait4's peak for a child starts at its parent's high-water mark (Linux copies it at exec): the
    benchmark's sherpa-onnx children, started by a process that already holds a model, report VmHWM."""
    from nemo2sherpa.child import run_measured

    big = bytearray(1 << 30)
    big[::4096] = b"\x01" * (len(big) // 4096)  # 1 GiB resident in this process
    code = f"import sys; sys.path.insert(0, {str(INCLUDE)!r}); from nemo2sherpa.child import own_peak_rss; print(own_peak_rss())"
    proc, usage = run_measured([sys.executable, "-c", code])
    assert usage.peak_rss_bytes >= 1 << 30  # the parent's gigabyte, which the child never touched
    assert 1e6 < int(proc.stdout) < 200e6  # the child's own
    del big


def test_a_step_measures_the_memory_of_all_its_processes_together():
    """run_measured's peak_tree_bytes: a step whose child holds 300 MB while its own child holds 200 MB held ~500 MB
    at once, where wait4's peak names only the largest process; its CPU seconds and other load are measured too."""
    from nemo2sherpa.child import run_measured

    inner = "y = bytearray(200_000_000); import time; time.sleep(1.5)"
    outer = f"import subprocess, sys; x = bytearray(300_000_000); subprocess.run([sys.executable, '-c', {inner!r}])"
    _, usage = run_measured([sys.executable, "-c", outer])
    assert usage.peak_rss_bytes > 300e6  # wait4's: the largest process (from this one's high-water mark up)
    assert 480e6 < usage.peak_tree_bytes < 800e6 and usage.cpu_s > 0 and 0 <= usage.other_load <= 1


def test_cli_refuses_bad_input_with_one_line(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "nemo2sherpa", "convert", str(tmp_path / "missing.nemo"), str(out)],
                          capture_output=True, text=True, env={"PYTHONPATH": str(INCLUDE), "PATH": ""})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no such .nemo file" in lines[0]
    assert not out.exists()


def bare_path(tmp_path: Path) -> str:
    """A PATH as on the stock Airflow image: Python and uv (requirements.txt's), no node, npm, npx, cargo, rustc, cc,
    gcc or clang."""
    bare = tmp_path / "bare-bin"
    bare.mkdir()
    for name, target in (("uv", shutil.which("uv")), ("python", sys.executable), ("python3", sys.executable)):
        (bare / name).symlink_to(target)
    assert not any(shutil.which(t, path=str(bare)) for t in ("node", "npm", "npx", "cargo", "rustc", "cc", "gcc",
                                                             "clang"))
    return str(bare)


def test_convert_runs_every_stage_in_the_dag_venvs(tmp_path, monkeypatch, fake_hub):
    """`make convert` on a worker with nothing but Python (a PATH without node, npm, npx, cargo, rustc, cc, gcc,
    clang): the whole chain without the scheduler, the runtime matrix with Node.js and the C compiler from PyPI; the
    bundle appears whole, published to the (loopback) Hub with the token of HF_TOKEN (--publish-to). Asked for the
    Rust runtime too, it refuses at once, naming the tools and the runtime that proves the same C API, and leaves
    nothing; so does a publish target it cannot publish to."""
    monkeypatch.setenv("PATH", bare_path(tmp_path))
    fake_hub.add_token("hf_convert", user="alice", orgs=("acme",), write=True)
    monkeypatch.setenv("HF_TOKEN", "hf_convert")
    out = tmp_path / "bundle"
    refused = run_module(["convert", str(FIXTURE), str(out), "--lengths", "1"], capture_output=True)
    assert refused.returncode == 2, refused.stderr[-2000:]
    last = refused.stderr.strip().splitlines()[-1]
    assert "C API from Rust needs cargo and rustc on PATH" in last and "leave 'rust' out" in last, last
    assert "'c' (C API from C) calls the same C API" in last and not out.exists()
    assert not (tmp_path / ".bundle.work").exists()
    bad = run_module(["convert", str(FIXTURE), str(out), "--runtimes", "python", "--publish-to", "ftp://acme"],
                     capture_output=True)
    assert bad.returncode == 2 and "publish target 'ftp://acme'" in bad.stderr.strip().splitlines()[-1], bad.stderr
    assert not out.exists() and not (tmp_path / ".bundle.work").exists()
    proc = run_module(["convert", str(FIXTURE), str(out), "--lengths", "1", "--runtimes", "python,cli,node,c",
                       "--publish-to", "hf://acme"], capture_output=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    c = json.loads((out / "compatibility.json").read_text())
    assert c["kinds"] == ["python", "cli", "node", "c"] and list(c["left_out"]) == ["rust"]
    assert all(x["status"] == "agrees" for r in c["runtimes"] for x in r["variants"].values() if x["in_range"])
    assert {r["kind"] for r in c["runtimes"]} == {"python", "cli", "node", "c"}
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["validation"]["passed"] and r["validation"]["token_match"]["fp32"] == 1.0
    repos = ["acme/sherpa-onnx-nemo-tiny-tdt", "acme/sherpa-onnx-nemo-tiny-tdt-int8"]
    assert [c["repo"] for c in fake_hub.commits] == repos
    assert r["published"]["hf://acme"]["commits"] == {c["repo"]: c["sha"] for c in fake_hub.commits}
    assert {"encoder.int8.onnx", "tokens.txt", "bpe.vocab", "README.md"} <= set(fake_hub.repos[repos[1]].files)
    assert {"encoder.onnx", "encoder.int8.onnx", "decoder.int8.onnx", "joiner.int8.onnx", "tokens.txt", "bpe.vocab",
            "validation.json", "benchmark.json"} <= {p.name for p in out.iterdir()}
    assert not (tmp_path / ".bundle.work").exists()
    bench = json.loads((out / "benchmark.json").read_text())
    assert bench["nemo_cpu"]["engine"] == "NeMo transcribe (PyTorch)"  # the baseline, timed where NeMo was loaded
    assert bench["nemo_cpu"]["by_length"]["1"]["p50_s"] > 0 and (out / "benchmark.png").exists()
    assert set(r["steps"]) == {"source", "export", "validate_export", "quantize", "metadata", "validate", "compat",
                               "package", "benchmark"}
    # One release archive a variant, as sherpa-onnx names its NeMo releases, and the model card beside them.
    assert {"sherpa-onnx-nemo-tiny-tdt.tar", "sherpa-onnx-nemo-tiny-tdt-int8.tar.gz", "README.md"} <= {
        p.name for p in out.iterdir()}
    card = (out / "README.md").read_text()
    assert "sherpa-onnx >= 1.12.14" in card and 'model_type="nemo_transducer", feature_dim=80' in card
    compat = json.loads((out / "compatibility.json").read_text())  # the runtime matrix ran on the bundle
    assert compat["passed"] and compat["variants"] == ["fp32", "int8"] and len(compat["runtimes"]) >= 5
    assert {x["layout"] for x in compat["ranges"].values()} == {"single file"}  # a tiny model, left as it is
    assert all(s["wall_s"] > 0 and s["peak_rss_bytes"] > 10e6 and s["peak_tree_bytes"] > 0
               and 0 <= s["other_load"] <= 1 for s in r["steps"].values())
    assert r["package"]["archives"] and all(a["seconds"] >= 0 for a in r["package"]["archives"])
    val = json.loads((out / "validation.json").read_text())  # the default int8 recipe made the int8 files
    assert r["validation"]["int8_recipe"] == val["int8"]["recipe"] == "matmul-qint8"
    assert val["int8"]["encoder"]["pointwise_convs_as_matmul"] == 4 and val["int8"]["encoder"]["rewrite_max_rel_diff"] <= 1e-5
    assert "ConvInteger" not in val["int8"]["integer_ops"]["encoder.int8.onnx"]
    assert 0 < val["variants"]["int8"]["encoder_rel_err"] < 0.05 and val["variants"]["fp32"]["encoder_rel_err"] < 1e-5
    md = (out / "VALIDATION.md").read_text()
    assert "int8 recipe `matmul-qint8`" in md
    # The built-in set: four clips and two long ones; drift gated per length bucket on the clips the model knows
    # (the tiny model cannot transcribe a minute of speech: there drift is reported), timestamps against NeMo.
    e = val["eval_set"]
    assert e["source"] == "built-in" and [c["name"] for c in e["clips"]][-2:] == ["long30s", "long60s"]
    assert 30 <= e["clips"][4]["duration_s"] < 60 <= e["clips"][5]["duration_s"]
    drift = val["variants"]["int8"]["decoding"]["wer_by_length"]
    assert list(drift) == ["< 30 s", "30-60 s", ">= 60 s"] and drift["< 30 s"]["gated_clips"] == 4
    assert "int8 WER vs fp32" in val["by_length"][">= 60 s"] and "By clip length" in md
    t = val["variants"]["fp32"]["timestamps"]
    assert t["tokens"] > 0 and t["mean_abs_offset_s"] <= 0.08 and "Timestamps" in md
    # A second run into the same (now non-empty) folder is refused before any work.
    again = run_module(["convert", str(FIXTURE), str(out), "--runtimes", "python,cli,node,c"], capture_output=True)
    assert again.returncode == 2 and "not empty" in again.stderr.strip().splitlines()[-1]


def test_export_checks_disk_before_any_work(tmp_path):
    """A checkpoint bigger than the free disk is refused up front, with the figures (no NeMo, nothing written).
    The .nemo is the real fixture grown to 1 TB as a sparse file: tar stops reading at its end marker."""
    big = tmp_path / "huge.nemo"
    shutil.copy(FIXTURE, big)
    os.truncate(big, 10**12)
    proc = run_cli("nemo", "export", "--nemo", str(big), "--bundle", str(tmp_path / "out" / "bundle"),
                   "--reference", str(tmp_path / "out" / "reference"), check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "needs ~2500.0 GB free disk" in last and "NEMO2SHERPA_WORKSPACE" in last
    assert not (tmp_path / "out").exists()


def test_preflight_names_what_is_short():
    from nemo2sherpa import preflight
    from nemo2sherpa.errors import InputError

    with pytest.raises(InputError, match=r"quantizing x needs ~.* GB of available memory, only .* GB"):
        preflight.check("quantizing x", 0, ROOT, 1e15)
    preflight.check("a tiny model", 1, ROOT, 1)  # the floor is far below any machine's free space


def _kill_at(venv: str, args: list[str], marker: str) -> None:
    """Run a stage CLI and SIGKILL it (no handler runs, as when a worker is OOM-killed) at a log line."""
    import signal

    proc = subprocess.Popen([str(stage_python(venv)), "-m", "nemo2sherpa", *args], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONPATH": str(INCLUDE)})
    for line in proc.stderr:
        if marker in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.stderr.close()
    assert proc.wait() == -signal.SIGKILL, f"the stage ended before {marker!r}"


def _digests(d: Path) -> dict[str, str]:
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def test_a_killed_export_retried_converges_to_identical_files(exported, tmp_path):
    """SIGKILL in the middle of export (NeMo restored, export under way), then the retry a task would get:
    the bundle comes out byte-identical to an undisturbed export (same sha256 for every file)."""
    b, r = tmp_path / "bundle", tmp_path / "reference"
    args = ["export", "--nemo", str(FIXTURE), "--bundle", str(b), "--reference", str(r)]
    with big_layout():  # as `exported` was made
        _kill_at("nemo", args, "encoder.onnx exported")
        assert (b / "encoder.onnx").exists()  # killed with ONNX already written: export was under way
        run_cli("nemo", *args)  # the retry
    assert _digests(b) == _digests(exported / "bundle")
    assert sorted(p.name for p in b.iterdir()) == ["bpe.vocab", "decoder.onnx", "encoder.onnx", "encoder.weights",
                                                  "joiner.onnx", "tokens.txt"]  # the big layout (conftest.BIG_LAYOUT)


def test_a_killed_quantize_retried_converges_to_identical_files(exported, tmp_path):
    """SIGKILL after quantize wrote the int8 encoder (its scratch folder left behind), then the retry: the
    same int8 files, byte for byte, as an undisturbed quantize, and no scratch left."""
    ref, b = tmp_path / "ref" / "bundle", tmp_path / "killed" / "bundle"
    shutil.copytree(exported / "bundle", ref)
    shutil.copytree(exported / "bundle", b)
    run_cli("onnx", "quantize", "--bundle", str(ref))
    _kill_at("onnx", ["quantize", "--bundle", str(b)], "encoder.int8.onnx")
    assert (b.parent / ".quantize-tmp").exists()  # what a kill leaves: the finally never ran
    run_cli("onnx", "quantize", "--bundle", str(b))  # the retry
    assert _digests(b) == _digests(ref) and not (b.parent / ".quantize-tmp").exists()
    assert {"encoder.int8.onnx", "decoder.int8.onnx", "joiner.int8.onnx"} <= set(_digests(b))


def test_the_load_meter_sees_another_busy_process_and_admits_short_calls():
    """benchmark.other_load: while this process sleeps 0.6 s, a child burning one core is ~half of 2 cores (over
    DISTURBED); a 5 ms call is below /proc/stat's resolution and says so (None) instead of guessing."""
    import time

    from nemo2sherpa.benchmark import DISTURBED, cpu_seconds, other_load

    burner = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<3: pass"])
    try:
        time.sleep(0.3)  # let it start spinning
        c0, t0 = cpu_seconds(), time.perf_counter()
        time.sleep(0.6)
        busy = other_load(c0, cpu_seconds(), time.perf_counter() - t0)
    finally:
        burner.kill()
        burner.wait()
    assert busy is not None and busy > DISTURBED, busy
    assert busy <= 1.0
    c0 = cpu_seconds()
    assert other_load(c0, cpu_seconds(), 0.005) is None


def _bench_record(nemo: bool = True) -> dict:
    """A benchmark.json as the step writes it, NeMo's transcribe() ~1000x slower than the converted engines (what
    flattened every other line into one band at 0 on the old linear plot), timed at 2 and 10 s only; the other
    engines also at 30 s."""
    sys.path.insert(0, str(INCLUDE))
    from nemo2sherpa.records import Benchmark, Engine, Gpu, Timing

    def t(s: float, runs: int = 5, disturbed: int | None = 0) -> Timing:
        return Timing(p50_s=s, p95_s=round(s * 1.1, 5), rtf_p50=0.1, runs=runs, cold_s=round(s * 1.3, 5),
                      other_load_max=None if disturbed is None else 0.02, disturbed_runs=disturbed)

    def engine(name: str, v: str, p50: dict[str, float], **kw) -> Engine:
        return Engine(status="ok", engine=name, provider="cpu", variant=v, threads=2,
                      by_length={L: t(s) for L, s in p50.items()}, **kw)

    return Benchmark(
        clip_lengths_s=[2.0, 10.0, 30.0], runs=5, threads=2,
        cpu={"fp32": engine("sherpa-onnx", "fp32", {"2": 0.004, "10": 0.008, "30": 0.02}, peak_rss_bytes=95_000_000,
                            load_s=0.15),
             "int8": engine("sherpa-onnx", "int8", {"2": 0.002, "10": 0.005, "30": 0.012}, peak_rss_bytes=80_000_000,
                            load_s=0.12)},
        ort_cpu={"int8": engine("onnxruntime", "int8", {"2": 0.0025, "10": 0.006, "30": 0.015},
                                encoder_by_length={"2": t(0.0012, disturbed=None), "10": t(0.004, disturbed=None),
                                                   "30": t(0.01, disturbed=None)},
                                tokens_by_length={"2": 7, "10": 32, "30": 94})},
        gpu=Gpu(status="skipped", reason="GPU benchmark not requested (gpu_benchmark=false)"),
        nemo_cpu=Engine(engine="NeMo transcribe (PyTorch)", provider="cpu", variant="fp32", threads=2,
                        by_length={"2": t(4.0, runs=3, disturbed=3), "10": t(6.0, runs=3)}) if nemo else None,
    ).to_json()


FIGURE = """
import json, sys
from pathlib import Path
from nemo2sherpa.benchmark import figure, plot
from nemo2sherpa.records import Benchmark

rec = Benchmark.from_json(json.loads(sys.argv[1]), "benchmark.json")
fig = figure(rec)
plot(rec, Path(sys.argv[2]) / "a.png")
plot(rec, Path(sys.argv[2]) / "b.png")
print(json.dumps({
    "title": fig.get_suptitle(),
    "legend": [t.get_text() for lg in fig.legends for t in lg.get_texts()],
    "legend_inside": [ax.get_legend() is not None for ax in fig.axes],
    "axes": [{"on": ax.axison, "yscale": ax.get_yscale(), "title": ax.get_title(), "ylabel": ax.get_ylabel(),
              "ylim": list(ax.get_ylim()), "text": [t.get_text() for t in ax.texts],
              "lines": [{"color": ln.get_color(), "marker": ln.get_marker(), "x": [float(x) for x in ln.get_xdata()],
                         "y": [float(y) for y in ln.get_ydata()]} for ln in ax.get_lines()],
              "labels": [ln.get_label() for ln in ax.get_lines()]} for ax in fig.axes]}))
"""


def _figure(record: dict, tmp_path: Path) -> dict:
    """figure() and plot() on `record`, in the onnx venv (matplotlib's): what the axes hold."""
    proc = subprocess.run([str(stage_python("onnx")), "-c", FIGURE, json.dumps(record), str(tmp_path)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(INCLUDE)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_benchmark_figure_shows_nemo_beside_the_engines_and_their_speed_up(tmp_path):
    """benchmark.png (issue 28): latency in ms on a log axis, NeMo's series among the others; beside it each
    engine's speed-up, NeMo's p50 / its p50 at the lengths NeMo was timed at; legend outside the panels; the same
    record gives the same bytes, with no software stamp in them."""
    rec = _bench_record()
    got = _figure(rec, tmp_path)
    lat, fast = got["axes"]
    assert lat["on"] and lat["yscale"] == "log" and "ms" in lat["ylabel"]
    series = {label: line for label, line in zip(lat["labels"], lat["lines"])}
    nemo = series.pop("NeMo transcribe CPU fp32 (baseline)")
    assert nemo["x"] == [2.0, 10.0] and nemo["y"] == pytest.approx([4000.0, 6000.0])  # ms
    assert series["sherpa-onnx CPU int8"]["y"] == pytest.approx([2.0, 5.0, 12.0])
    assert series["onnxruntime CPU int8, encoder only"]["y"] == pytest.approx([1.2, 4.0, 10.0])
    assert set(series) == {"sherpa-onnx CPU fp32", "sherpa-onnx CPU int8", "onnxruntime CPU int8",
                           "onnxruntime CPU int8, encoder only"}
    # NeMo ~1000x above the others and both inside the log axis, neither pressed to its edge
    assert lat["ylim"][0] < 1.2 and lat["ylim"][1] > 6000 and lat["ylim"][1] / lat["ylim"][0] < 1e5
    # the right panel: NeMo p50 / this p50, at 2 and 10 s only (NeMo was not timed at 30 s)
    assert fast["on"] and "NeMo" in fast["title"] and fast["yscale"] == "log"
    ratios = {label: line for label, line in zip(fast["labels"], fast["lines"]) if not label.startswith("_")}
    assert set(ratios) == set(series), fast["labels"]  # every non-NeMo series, NeMo's own only as the 1x line
    for label, line in ratios.items():
        p50 = dict(zip(series[label]["x"], series[label]["y"]))
        assert line["x"] == [2.0, 10.0], (label, line)
        assert line["y"] == pytest.approx([4000 / p50[2.0], 6000 / p50[10.0]]), label
        assert (line["color"], line["marker"]) == (series[label]["color"], series[label]["marker"])  # as on the left
    assert [line["y"] for label, line in zip(fast["labels"], fast["lines"]) if label.startswith("_")] == [[1.0, 1.0]]
    assert ratios and min(y for line in ratios.values() for y in line["y"]) > 300  # ~1000x, on the axis
    assert fast["ylim"][0] < 1 < 1000 < fast["ylim"][1]  # NeMo's own 1x line in view
    # legend: every series once, outside both panels; the title: threads and runs (NeMo's own count too)
    assert sorted(got["legend"]) == sorted([*series, "NeMo transcribe CPU fp32 (baseline)"])
    assert got["legend_inside"] == [False, False]
    assert "2 threads" in got["title"] and "5 timed runs per point" in got["title"] and "NeMo: 3 runs" in got["title"]
    a, b = (tmp_path / "a.png").read_bytes(), (tmp_path / "b.png").read_bytes()
    assert a[:8] == b"\x89PNG\r\n\x1a\n" and a == b and b"Software" not in a and b"matplotlib" not in a.lower()


def test_the_benchmark_figure_says_when_there_is_no_nemo_to_compare_with(tmp_path):
    """No NeMo baseline in the record: the latency panel as always, the speed-up panel a note saying why it is
    empty (never ratios against something else under NeMo's name)."""
    got = _figure(_bench_record(nemo=False), tmp_path)
    lat, fast = got["axes"]
    assert lat["yscale"] == "log" and len(lat["lines"]) == 4
    assert not fast["on"] and not fast["lines"] and "No NeMo baseline" in " ".join(fast["text"])
    assert "NeMo:" not in got["title"]


def test_the_benchmark_table_is_in_milliseconds_and_says_what_its_columns_mean():
    """table(): every time in ms (the figure's unit), named in the header; a key under it for `disturbed` and the
    `-enc` rows; peak RSS and the GPU line kept."""
    sys.path.insert(0, str(INCLUDE))
    from nemo2sherpa.benchmark import DISTURBED, table
    from nemo2sherpa.records import Benchmark

    text = table(Benchmark.from_json(_bench_record(), "benchmark.json"))
    lines = text.splitlines()
    assert lines[0].split() == ["engine", "variant", "length", "p50", "ms", "p95", "ms", "RTF", "cold", "ms",
                                "disturbed", "tokens"]
    assert " s " not in lines[0] and "p50 s" not in text
    rows = {tuple(x.split()[:3]): x.split()[3:] for x in lines[1:] if x.split()[0] in
            ("sherpa-cpu", "ort-cpu", "ort-cpu-enc", "nemo-cpu")}
    assert rows[("sherpa-cpu", "int8", "10s")] == ["5.0", "5.5", "0.1000", "6.5", "0/5"]  # p50, p95, RTF, cold
    assert rows[("ort-cpu", "int8", "30s")] == ["15.0", "16.5", "0.1000", "19.5", "0/5", "94"]
    assert rows[("ort-cpu-enc", "int8", "2s")] == ["1.2", "1.3", "0.1000", "1.6", "-"]
    assert rows[("nemo-cpu", "fp32", "2s")] == ["4000.0", "4400.0", "0.1000", "5200.0", "3/3"]
    assert len(rows) == 3 + 3 + 3 + 3 + 2
    key = {x.split(":")[0]: x for x in lines if x.split(":")[0] in ("ms", "-enc", "disturbed")}
    assert set(key) == {"ms", "-enc", "disturbed"}
    assert f"more than {DISTURBED:.0%} of the machine's CPUs" in key["disturbed"] and "too short" in key["disturbed"]
    assert "encoder alone" in key["-enc"] and "5 warm calls" in key["ms"] and "NeMo: 3 runs" in key["ms"]
    assert "sherpa-onnx fp32: peak RSS 95 MB, load 0.15 s" in lines
    assert "gpu: skipped (GPU benchmark not requested (gpu_benchmark=false))" in lines


POSITION_TABLES = """
import json, sys
from pathlib import Path
import onnx
from nemo2sherpa.positions import POSITION_NODES

graph = onnx.load(str(Path(sys.argv[1]) / "encoder.onnx"), load_external_data=False).graph
shapes = [list(a.t.dims) for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.HasField("t")]
shapes += [list(t.dims) for t in graph.initializer]
print(json.dumps({"ops": sorted({n.op_type for n in graph.node if n.name.startswith(POSITION_NODES)}),
                  "tables": [s for s in shapes if len(s) == 3 and s[0] == 1 and s[1] > 1000]}))
"""


def _onnx_venv(code: str, *args: str) -> dict:
    proc = subprocess.run([str(stage_python("onnx")), "-c", code, *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(INCLUDE)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_encoder_computes_its_positions_so_a_recording_past_the_old_table_decodes(validated):
    """NeMo's positional table, baked into encoder.onnx by export, covered only what NeMo had seen (the built-in
    evaluation set: 6,101 encoder frames, about 488 s); sherpa-onnx stopped on anything longer ("Attempting to
    broadcast an axis"). The exported encoder computes its positions from the input's length (positions.py): no
    table constant in the graph, and validate's long-recording gate (the `validated` fixture's: 9 minutes of the
    evaluation clips with pauses, decoded at once) passes in sherpa-onnx, fp32 and int8: the reference decoder on
    sherpa-onnx's own features gives its tokens at its frames, resynchronized on sherpa-onnx's token where the two
    part at a near-tie. (What the tiny model makes of 9 minutes at once is noise past the first clips: it was trained
    on short clips, so it parts often, always at near-ties.)"""
    bundle = validated / "bundle"
    made = _onnx_venv(POSITION_TABLES, str(bundle))
    assert {"Range", "Sin", "Cos"} <= set(made["ops"]) and made["tables"] == [], made  # no [1, rows, d] table
    val = json.loads((bundle / "validation.json").read_text())
    gates = {g["gate"]: g for g in val["gates"]}
    for variant in ("fp32", "int8"):
        run = val["variants"][variant]["long_recording"]
        assert run["seconds"] >= LONG_RECORDING_S and "error" not in run, run
        agreement = run["agreement"]
        assert agreement["tokens"] > 100 and (agreement["exact"] or agreement["tie"]), (variant, run)
        assert run["sherpa_peak_gb"] > 0.05 and run["sherpa_decode_s"] > 0 and run["reference_s"] > 0, run
        gate = gates[f"{variant}: sherpa-onnx == reference decoder on a {run['seconds'] / 60:.1f}-minute recording"]
        assert gate["passed"] and f"{agreement['tokens']} tokens" in gate["value"], gate
    a = val["long_audio"]
    assert a["longest_clip"] == "long-recording gate" and a["longest_proven_s"] == a["recording_s"] >= LONG_RECORDING_S
    assert set(a["sherpa_peak_gb"]) == {"fp32", "int8"}, a
    # and on the evaluation clips (the greedy child's own peak): what the 9 minutes add over them is the audio's share
    longest = max(c["duration_s"] for c in json.loads((validated / "reference" / "export.json").read_text())["clips"])
    assert a["longest_clip_s"] == longest and set(a["clips_peak_gb"]) == {"fp32", "int8"}, a
    assert all(0.05 < a["clips_peak_gb"][v] < a["sherpa_peak_gb"][v] for v in ("fp32", "int8")), a


LOCAL_RECORDING_S = 1800  # the local-attention bundle's long-recording gate: 30 minutes


def test_local_attention_exports_right_and_decodes_30_minutes_at_once(source_manifest, tmp_path):
    """Local attention, opt in (localattn): each encoder frame attends to 128 frames each side, so memory grows
    linearly with the length. NeMo's own export of it is silently wrong (masks written in place on a view, chunk
    strides frozen at the export input's length: the fp32 encoder differed from PyTorch by up to 3.1); exported with
    the out-of-place forms it is held to NeMo with local attention by every gate on the evaluation clips (the 61 s clip
    spans several windows), and the long-recording gate decodes 30 minutes at once in sherpa-onnx as the reference
    decoder does. fp32 (int8 and fp16 are made from it as from any export)."""
    d = tmp_path
    run_cli("nemo", "export", "--nemo", str(FIXTURE), "--bundle", str(d / "bundle"), "--reference",
            str(d / "reference"), "--source-json", str(source_manifest), "--local-attention", "128,128")
    exp = json.loads((d / "reference" / "export.json").read_text())
    assert exp["attention"] == "local [128, 128]" and "window" in exp["positions"], exp["positions"]
    run_cli("onnx", "validate", "--bundle", str(d / "bundle"), "--reference", str(d / "reference"), "--variants",
            "fp32", "--source-json", str(source_manifest), "--report", str(d / "bundle" / "validation.json"),
            "--long-recording-s", str(LOCAL_RECORDING_S))
    val = json.loads((d / "bundle" / "validation.json").read_text())
    assert val["passed"], [g for g in val["gates"] if not g["passed"]]
    fp32 = val["variants"]["fp32"]
    assert fp32["max_abs_diff"]["encoder_clips"] < 1e-4 and fp32["decoding"]["token_match_rate"] == 1.0, fp32
    run = fp32["long_recording"]
    assert run["seconds"] >= LOCAL_RECORDING_S and "error" not in run, run
    assert run["agreement"]["tokens"] > 1000 and (run["agreement"]["exact"] or run["agreement"]["tie"]), run
    a = val["long_audio"]
    assert a["attention"] == "local [128, 128]" and "linearly" in a["limit"] and a["recording_s"] >= LOCAL_RECORDING_S
    md = (d / "bundle" / "VALIDATION.md").read_text()
    assert "attention local [128, 128]" in md and "grows linearly with the length" in md
