"""The full-size record: parakeet-tdt-1.1b's architecture, random weights, through every pipeline step.

Run by hand (not in CI; ~10 min and ~15 GB of disk on a 2-core, 24 GB machine):

    make bench-full-size            # = .venv/bin/python benchmarks/full_size.py
    make bench-full-size ARGS=--gpu # on a GPU machine: onnxruntime CUDA rows too

Builds the architecture from a NeMo config (tests/fixtures/build_tiny_model.py --family tdt-1.1b-full:
FastConformer 42 x 1024, LSTM 2 x 640, 80 mels, vocab 1024; random weights cost the same time and
memory as trained ones), then runs `nemo2sherpa convert` on it: every step in the DAG's own venv, each
in its own process. Records each step's wall time and peak RSS (wait4), the bundle's file sizes, the
validation figures and the benchmark p50s into benchmarks/results/full-size-1.1b.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))

from nemo2sherpa import venvs  # noqa: E402
from nemo2sherpa.benchmark import table  # noqa: E402
from nemo2sherpa.child import run_measured  # noqa: E402
from nemo2sherpa.cli import convert, setup_logging  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
GOALS = {"peak_rss_gb": 12.0, "wall_s": 300.0}  # issue 4: whole conversion, 2 cores, 24 GB


def machine() -> dict:
    """Cores, memory and the CPU (model, clock, the int8 instructions onnxruntime can use): figures depend on them."""
    mem = next(int(line.split()[1]) * 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    info = Path("/proc/cpuinfo").read_text()
    field = {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in info.split("\n\n")[0].splitlines() if ":" in ln)}
    flags = [f for f in ("avx2", "avx512_vnni", "avx_vnni", "amx_int8") if f in field.get("flags", "").split()]
    cpu = f"{field.get('model name', '?')} at {float(field.get('cpu MHz', 0)):.0f} MHz ({', '.join(flags) or 'no AVX2'})"
    return {"cpus": os.cpu_count(), "memory_gb": round(mem / 2**30, 1), "python": platform.python_version(),
            "platform": platform.platform(), "cpu": cpu}


def command(target: str) -> str:
    """How a record was made: the make target and the ARGS it was given."""
    return target + (f" ARGS='{' '.join(sys.argv[1:])}'" if sys.argv[1:] else "")


def write_record(name: str, rec: dict, md: str) -> None:
    """benchmarks/results/<name>.json and .md; the markdown is printed too."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(rec, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(md)
    print(md)


def markdown(rec: dict) -> str:
    gb = 1e9
    out = [f"# Full-size conversion record: {rec['model']}", "",
           f"Made {rec['date']} by `{rec['command']}` on {rec['machine']['cpus']} cores"
           + (f" of an {rec['machine']['cpu']}" if rec["machine"].get("cpu") else "")
           + f", {rec['machine']['memory_gb']} GiB RAM ({rec['machine']['platform']}).", "",
           "| step | wall (s) | peak RSS (GB) |", "|---|---|---|"]
    for name, s in rec["steps"].items():
        out.append(f"| {name} | {s['wall_s']:.1f} | {s['peak_rss_bytes'] / gb:.2f} |")
    conv = {k: v for k, v in rec["steps"].items() if k != "build (fixture, not a pipeline step)"}
    steps = [k for k in conv if k != "benchmark" and "its own child" not in k]  # pipeline steps, not children
    out += ["", f"Conversion (every pipeline step): {rec['conversion_wall_s']:.0f} s wall, peak RSS "
                f"{max(s['peak_rss_bytes'] for s in conv.values()) / gb:.2f} GB (goals: <= {GOALS['wall_s']:.0f} s, "
                f"<= {GOALS['peak_rss_gb']:.0f} GB). Without the benchmark step: "
                f"{sum(conv[k]['wall_s'] for k in steps):.0f} s ({', '.join(steps)}).", "",
            "Inside export (s): " + ", ".join(f"{k} {v:.1f}" for k, v in rec["export_timings_s"].items()) + ". "
            "`nemo_baseline` is benchmark work (NeMo's transcribe() timed at each clip length for the benchmark's "
            "baseline, done in export because NeMo is loaded there); without it and the benchmark step, the "
            f"conversion took {sum(conv[k]['wall_s'] for k in steps) - rec['export_timings_s'].get('nemo_baseline', 0):.0f} s.",
            "", "| file | bytes |", "|---|---|"]
    for name, size in rec["files"].items():
        out.append(f"| {name} | {size:,} |")
    v = rec["validation"]
    out += ["", f"Validation: {'passed' if v['passed'] else 'FAILED'}, {v['gates']} gates; max abs diff "
                f"{json.dumps(v['max_abs_diff'])}; token match {json.dumps(v['token_match'])}.", "",
            "sherpa-onnx CPU p50 (s) by clip length: " + json.dumps(rec["benchmark_p50_s"]), "",
            "The benchmark stage's table (every engine; GPU rows when run with --gpu on a GPU machine):", "",
            "```", table(rec["benchmark"]), "```", "",
            "Reading these figures: the weights are random, so time and memory of every conversion step are the "
            "real model's. Of a latency, the encoder's part (`-enc` rows) is the real model's too: its cost does not "
            "depend on the weights' values; the greedy loop on top depends on how many tokens the joint emits "
            "(`tokens` column). " + encoder_share(rec["benchmark"]) + " WER gates were report-only for this run "
            "(random text); the exactness gates (fp32 max abs diff <= 1e-4, fp32 greedy tokens == NeMo) were "
            "enforced and passed.", ""]
    return "\n".join(out)


def encoder_share(bench: dict) -> str:
    """How much of onnxruntime's latency is the encoder alone, per variant, at 10 s (issue 4's goal length)
    or else the longest clip."""
    parts = []
    for v, r in bench.get("ort_cpu", {}).items():
        if r.get("encoder_by_length"):
            L = "10" if "10" in r["by_length"] else max(r["by_length"], key=float)
            whole, enc = r["by_length"][L]["p50_s"], r["encoder_by_length"][L]["p50_s"]
            parts.append(f"{v} {L} s clip: encoder {enc:.2f} s of {whole:.2f} s ({r['tokens_by_length'][L]} tokens)")
    return ("Measured here, onnxruntime CPU: " + "; ".join(parts) + ".") if parts else ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/nemo2sherpa-full-size"))
    ap.add_argument("--lengths", default="2,5,10,30")
    ap.add_argument("--variants", default="fp32,int8,fp16")
    ap.add_argument("--name", default="full-size-1.1b", help="record name: benchmarks/results/<name>.{json,md}")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoint and bundle in --work")
    ap.add_argument("--gpu", action="store_true",
                    help="also benchmark onnxruntime CUDA (on a machine with an NVIDIA GPU; else recorded as skipped)")
    a = ap.parse_args()
    setup_logging()
    shutil.rmtree(a.work, ignore_errors=True)
    a.work.mkdir(parents=True)
    nemo = a.work / "parakeet-tdt-1.1b-random.nemo"
    builder = [str(venvs.ensure("nemo") / "bin" / "python"), str(ROOT / "tests" / "fixtures" / "build_tiny_model.py"),
               "--family", "tdt-1.1b-full", "--out", str(nemo)]
    proc, build = run_measured(builder)
    if proc.returncode != 0:
        print(f"building the full-size checkpoint failed (exit {proc.returncode})", file=sys.stderr)
        return 1
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"built {nemo} ({nemo.stat().st_size / 1e9:.2f} GB, {info['params'] / 1e9:.3f} B params) in "
          f"{build['wall_s']:.0f} s, peak RSS {build['peak_rss_bytes'] / 1e9:.2f} GB", flush=True)
    t0 = time.monotonic()
    try:
        # Random weights transcribe noise: WER gates report only; the exactness gates (fp32 diffs <= 1e-4,
        # fp32 greedy tokens == NeMo's) hold at full size and stay gated.
        r = convert(str(nemo), a.work / "bundle", a.variants.split(","), lengths=a.lengths, gpu=a.gpu,
                    gates={"int8_wer_max": None, "fp16_wer_max": None, "sherpa_wer_max": None})
    except SystemExit as e:
        print(f"conversion failed: {e}", file=sys.stderr)
        return 1
    children = {f"quantize: {v} (its own child)": {k: x[k] for k in ("wall_s", "peak_rss_bytes")}
                for v, x in r["reduced_variants"].items()}
    rec = {"model": "parakeet-tdt-1.1b architecture, random weights", "date": time.strftime("%Y-%m-%d"),
           "command": command("make bench-full-size"), "machine": machine(), "params": info["params"],
           "nemo_bytes": nemo.stat().st_size, "steps": {"build (fixture, not a pipeline step)": build, **r["steps"], **children},
           "conversion_wall_s": round(time.monotonic() - t0, 1), "files": r["files"], "validation": r["validation"],
           "benchmark_p50_s": r["benchmark_p50_s"], "goals": GOALS,
           "benchmark": json.loads((a.work / "bundle" / "benchmark.json").read_text()),
           "export_timings_s": json.loads((a.work / "bundle" / "export.json").read_text())["timings_s"]}
    write_record(a.name, rec, markdown(rec))
    if not a.keep:
        shutil.rmtree(a.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
