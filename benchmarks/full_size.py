"""The full-size record: parakeet-tdt-1.1b's architecture (random weights) through everything a default DAG run does.

    make bench-full-size                 # = .venv/bin/python benchmarks/full_size.py; CI runs it after make test
    make bench-full-size ARGS=--gpu      # on a GPU machine: onnxruntime CUDA rows too

Builds the architecture from a NeMo config (tests/fixtures/build_tiny_model.py --family tdt-1.1b-full: FastConformer
42 x 1024, LSTM 2 x 640, 80 mels, vocab 1024; random weights cost the time and memory trained ones do), then runs
what a default DAG run runs, with the DAG's defaults (variants, int8 recipe, gates, runtime matrix, benchmark
lengths) but the long-recording gate's length (--long-recording-s, default LONG_RECORDING_S: 2 minutes; the DAG's 10
minutes would add ~25 minutes and need ~18 GB for fp32 at this size, benchmarks/results/long-audio-1.1b.md, where
10 minutes is measured by hand): every step of pipeline.STEPS in its own venv and process (`nemo2sherpa convert`:
source, export, validate_export, quantize, metadata, validate, compat, package, benchmark), then publish to a loopback S3 server
(rclone), manifest and latest.json included, as the DAG's publish task does. The DAG's gates stay on: on random
weights no clip is one the model knows, so the WER gates have nothing to hold, while every exactness gate holds.
convert also publishes to a loopback Hugging Face Hub (tests/hubserver.py, `--publish-to hf://...`: one repo a
variant, its files through huggingface_hub's LFS upload), recorded as `publish_hub` beside the default run: not a
default target, so the whole default run's time leaves it out.

Writes benchmarks/results/full-dag-1.1b.{json,md}: per step `wall_s`, `peak_rss_bytes` (the largest process,
wait4), `peak_tree_bytes` (the step's processes together, PSS), `cpu_s`, `other_load` (the share of the machine
other processes used meanwhile); per phase inside export, quantize and validate; per runtime of the matrix and
per archive their seconds; `total_wall_s`; `passed` (every step succeeded); the machine. Exits 1 when a step
fails, after writing the record.
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
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))

from nemo2sherpa import venvs  # noqa: E402
from nemo2sherpa.benchmark import table  # noqa: E402
from nemo2sherpa.child import memory_gib, run_measured  # noqa: E402
from nemo2sherpa.gates import LONG_RECORDING  # noqa: E402
from nemo2sherpa.records import Benchmark, LongAudio, LongRecording  # noqa: E402
from nemo2sherpa.variants import DEFAULT_VARIANTS  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
NAME = "full-dag-1.1b"
# Issue 22's goals at 1.1B, 2 cores, a quiet machine.
GOALS = {"validated_bundle_s": 300.0, "total_wall_s": 900.0, "peak_rss_gb": 10.0}
LONG_RECORDING_S = 120  # the long-recording gate's recording here (s): CI runs this record within its hour
VALIDATED = ("source", "export", "validate_export", "quantize", "metadata", "validate")  # a validated bundle
HUB_NAMESPACE, HUB_TOKEN = "nemo2sherpa-bench", "hf_bench_write_token"  # of the loopback Hub only


def machine() -> dict:
    """Cores, memory and the CPU (model, clock, the int8 instructions onnxruntime can use): figures depend on them."""
    info = Path("/proc/cpuinfo").read_text()
    field = {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in info.split("\n\n")[0].splitlines() if ":" in ln)}
    flags = [f for f in ("avx2", "avx512_vnni", "avx_vnni", "amx_int8") if f in field.get("flags", "").split()]
    cpu = f"{field.get('model name', '?')} at {float(field.get('cpu MHz', 0)):.0f} MHz ({', '.join(flags) or 'no AVX2'})"
    return {"cpus": os.cpu_count(), "memory_gb": round(memory_gib(), 1), "python": platform.python_version(),
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


def build(nemo: Path) -> tuple[dict, dict]:
    """The 1.1B-architecture checkpoint with random weights: (its build info, the build's usage)."""
    proc, usage = run_measured([str(venvs.ensure("nemo") / "bin" / "python"),
                                str(ROOT / "tests" / "fixtures" / "build_tiny_model.py"), "--family", "tdt-1.1b-full",
                                "--out", str(nemo)])
    if proc.returncode != 0:
        raise SystemExit(f"building the full-size checkpoint failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1]), usage.to_json()


def convert_steps(nemo: Path, out: Path, gpu: bool, hub, long_recording_s: float) -> tuple[dict, dict, str | None]:
    """`nemo2sherpa convert` with the DAG's defaults but the long-recording gate's length, in a child process that
    runs each step in its venv, publishing to the loopback Hub: (the per-step usage it reports, with the Hub's
    publish as `publish_hub`, its manifest, the failure if any)."""
    cmd = [sys.executable, "-m", "nemo2sherpa", "convert", str(nemo), str(out), "--keep-work-on-failure",
           "--publish-to", f"hf://{HUB_NAMESPACE}", "--long-recording-s", f"{long_recording_s:g}"] + \
        (["--gpu"] if gpu else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT / "include"), "HF_ENDPOINT": hub.url, "HF_TOKEN": HUB_TOKEN,
           "HF_HUB_DISABLE_XET": "1"}  # the loopback Hub speaks LFS
    proc, _ = run_measured(cmd, env=env, tree_memory=False)
    lines = proc.stdout.strip().splitlines()
    last = json.loads(lines[-1]) if proc.returncode == 0 and lines and lines[-1].startswith("{") else {}
    if proc.returncode == 0:
        published = last.get("published", {}).get(f"hf://{HUB_NAMESPACE}", {})
        steps = {**last.get("steps", {}), "publish_hub": {k: published[k] for k in ("wall_s", "peak_rss_bytes")}}
        return steps, last, None if len(published.get("commits", {})) == len(DEFAULT_VARIANTS) else \
            f"the Hub publish made {len(published.get('commits', {}))} commits, not one a variant"
    steps = _json(out.parent / f".{out.name}.work" / "steps.json")  # the steps that ran, the failed one last
    return steps, last, f"convert exited {proc.returncode} in step {list(steps)[-1] if steps else '?'}"


def hub_repos(hub) -> dict:
    """What the loopback Hub holds after the run: each repo's commits and files (name: size)."""
    return {repo: {"commits": [c["sha"] for c in hub.commits if c["repo"] == repo],
                   "files": {n: p.stat().st_size for n, p in sorted(r.files.items())}}
            for repo, r in hub.repos.items()}


def publish(bundle: Path, source: dict, work: Path) -> tuple[dict, dict, str | None]:
    """The DAG's publish to a loopback S3 server (rclone), measured as a child process of its own."""
    from s3server import S3Server

    with S3Server(work / "s3", log=work / "rclone.log") as s3:
        code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from nemo2sherpa.publish import bundle_key, "
                "publish_bundle; from nemo2sherpa.records import Source; import boto3; c = boto3.client('s3', "
                "endpoint_url=sys.argv[2], aws_access_key_id=sys.argv[3], aws_secret_access_key=sys.argv[4], "
                "region_name='us-east-1'); src = Source.from_json(json.loads(sys.argv[6])); out = publish_bundle(c, "
                "sys.argv[5], 'nemo2sherpa', bundle_key('bundles', src.name, src.revision), src); "
                "print(json.dumps({'objects': len(out.objects), 'uri': out.uri}))")
        proc, usage = run_measured([sys.executable, "-c", code, str(ROOT / "include"), s3.endpoint, s3.key,
                                    s3.secret, str(bundle), json.dumps(source)])
    lines = proc.stdout.strip().splitlines()
    return usage.to_json(), (json.loads(lines[-1]) if proc.returncode == 0 else {}), (
        None if proc.returncode == 0 else f"publish exited {proc.returncode}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("NEMO2SHERPA_FULL_SIZE_WORK",
                                                                    "/tmp/nemo2sherpa-full-size")))
    ap.add_argument("--name", default=NAME, help="record name: benchmarks/results/<name>.{json,md}")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoint and bundle in --work")
    ap.add_argument("--gpu", action="store_true",
                    help="also benchmark onnxruntime CUDA (on a machine with an NVIDIA GPU; else recorded as skipped)")
    ap.add_argument("--long-recording-s", type=float, default=LONG_RECORDING_S,
                    help=f"the long-recording gate's length (default {LONG_RECORDING_S} s; the DAG's default: "
                         f"{LONG_RECORDING.shown(LONG_RECORDING.default)})")
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    a.work.mkdir(parents=True)
    nemo, out = a.work / "parakeet-tdt-1.1b-random.nemo", a.work / "bundle"
    info, built = build(nemo)
    print(f"built {nemo} ({nemo.stat().st_size / 1e9:.2f} GB, {info['params'] / 1e9:.3f} B params) in "
          f"{built['wall_s']:.0f} s", flush=True)
    from hubserver import FakeHub

    t0 = time.monotonic()
    with FakeHub() as hub:
        hub.add_token(HUB_TOKEN, user="bench", orgs=(HUB_NAMESPACE,), write=True)
        steps, result, failed = convert_steps(nemo, out, a.gpu, hub, a.long_recording_s)
        repos = hub_repos(hub)
    bundle = out if out.exists() else a.work / f".{out.name}.work" / "bundle"  # a failed run's work, kept
    if not failed:
        steps["publish"], published, failed = publish(bundle, result["source"], a.work)
    wall = time.monotonic() - t0 - steps.get("publish_hub", {}).get("wall_s", 0)  # the default run's
    rec = {**record(a, info, built, steps, bundle, result, wall, failed), "hub": repos}
    write_record(a.name, rec, markdown(rec))
    if not a.keep:
        shutil.rmtree(a.work, ignore_errors=True)
    return 0 if rec["passed"] else 1


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def record(a, info: dict, built: dict, steps: dict, bundle: Path, result: dict, wall: float,
           failed: str | None) -> dict:
    """The record: steps, phases, runtimes, archives, the bundle's files, the benchmark table, the verdict."""
    from nemo2sherpa.pipeline import STEPS

    val, compat = _json(bundle / "validation.json"), _json(bundle / "compatibility.json")
    export = _json(bundle / "export.json") or _json(bundle.parent / "reference" / "export.json")
    quant = _json(bundle.parent / "reference" / "quantize.json") if not (bundle / "quantize.json").exists() else \
        _json(bundle / "quantize.json")
    want = [s.name for s in STEPS] + ["publish", "publish_hub"]
    return {
        "model": "parakeet-tdt-1.1b architecture, random weights", "date": time.strftime("%Y-%m-%d"),
        "command": command("make bench-full-size"), "machine": machine(), "params": info["params"],
        "nemo_bytes": (a.work / "parakeet-tdt-1.1b-random.nemo").stat().st_size, "build": built,
        "steps": steps, "passed": failed is None and all(s in steps for s in want), "failure": failed,
        "total_wall_s": round(wall, 1), "validated_bundle_s": round(sum(steps[s]["wall_s"] for s in VALIDATED
                                                                        if s in steps), 1),
        "other_load_max": max((s.get("other_load", 0) for s in steps.values()), default=None),
        "goals": GOALS, "phases_s": {"export": export.get("timings_s", {}), "quantize": quant.get("timings_s", {}),
                                     "validate": val.get("timings_s", {})},
        "runtimes": [{"runtime": r["runtime"], "seconds": r["seconds"],
                      "variants": {v: {"status": x["status"], "in_range": x["in_range"], "seconds": x["seconds"]}
                                   for v, x in r["variants"].items()}} for r in compat.get("runtimes", [])],
        "ranges": compat.get("ranges", {}),
        "archives": result.get("package", {}).get("archives", []) or _archives(bundle),
        "files": {p.name: p.stat().st_size for p in sorted(bundle.iterdir()) if p.is_file()} if bundle.exists() else {},
        "validation": {"passed": val.get("passed"), "gates": len(val.get("gates", []))},
        "long_recording_s": a.long_recording_s, "long_audio": val.get("long_audio"),
        "long_recording": {v: x["long_recording"] for v, x in val.get("variants", {}).items() if "long_recording" in x},
        "benchmark": _json(bundle / "benchmark.json")}


def _long_recording_rows(rec: dict) -> list[str]:
    """The long-recording gate per variant: sherpa-onnx's peak memory and time (and its peak on the evaluation clips,
    for what the length adds), the reference decoder's, the verdict."""
    runs = rec.get("long_recording") or {}
    if not runs:
        return []
    clips = LongAudio.from_json(rec["long_audio"]).clips_peak_gb or {} if rec.get("long_audio") else {}
    out = [f"Long-recording gate ({rec['long_recording_s']:g} s of the evaluation clips with pauses, decoded at once):",
           "", "| variant | sherpa-onnx peak RSS (GB) | on the evaluation clips (GB) | load (s) | decode (s) | "
           "reference decoder (s) | validate's peak RSS so far (GB) | tokens | partings (near-ties) | held |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for v, x in runs.items():
        r = LongRecording.from_json(x, f"long_recording of {v}")
        a = r.agreement
        out.append(f"| {v} | {r.sherpa_peak_gb} | {clips.get(v, '-')} | {r.sherpa_load_s} | {r.sherpa_decode_s} | "
                   f"{r.reference_s} | {r.validate_peak_gb} | {a.tokens if a else '-'} | "
                   f"{a.partings if a else '-'} | {'yes' if r.held else 'no: ' + (r.error or 'a wide parting')} |")
    return out + [""]


def _archives(bundle: Path) -> list[dict]:
    return [{"name": p.name, "size": p.stat().st_size} for p in sorted(bundle.glob("sherpa-onnx-nemo-*.tar*"))]


def markdown(rec: dict) -> str:
    """The record for a person: verdict, the steps' table against the goals, where the time goes, the matrix."""
    gb = 1e9
    m = rec["machine"]
    out = [f"# Full-size DAG record: {rec['model']}", "",
           f"Made {rec['date']} by `{rec['command']}` on {m['cpus']} cores of an {m['cpu']}, {m['memory_gb']} GiB RAM; "
           f"other load on the machine during the run: at most {100 * (rec['other_load_max'] or 0):.0f}% of it "
           f"(per step below).", "",
           f"**{'PASSED' if rec['passed'] else 'FAILED: ' + str(rec['failure'])}**: every step of a default DAG run "
           f"(the DAG's variants, gates, runtime matrix and benchmark lengths" +
           (f"; the long-recording gate on {rec['long_recording_s']:g} s, not the DAG's default"
            if rec.get("long_recording_s") else "") + "), then publish to a loopback S3 server.", "",
           "| step | wall (s) | peak RSS (GB) | its processes together (GB) | CPU (s) | other load |",
           "|---|---|---|---|---|---|"]
    for name, s in rec["steps"].items():
        out.append(f"| {name} | {s['wall_s']:.1f} | {s['peak_rss_bytes'] / gb:.2f} | "
                   f"{s.get('peak_tree_bytes', 0) / gb:.2f} | {s.get('cpu_s', 0):.0f} | "
                   f"{100 * s.get('other_load', 0):.0f}% |")
    g = rec["goals"]
    peak = max((s["peak_rss_bytes"] for s in rec["steps"].values()), default=0) / gb
    tree = max((s.get("peak_tree_bytes", 0) for s in rec["steps"].values()), default=0) / gb
    out += ["", f"Validated bundle (source through validate): **{rec['validated_bundle_s']:.0f} s** (goal "
                f"<= {g['validated_bundle_s']:.0f} s). Whole run: **{rec['total_wall_s']:.0f} s** (goal <= "
                f"{g['total_wall_s']:.0f} s). Peak RSS of a process: **{peak:.2f} GB**, of a step's processes "
                f"together: {tree:.2f} GB (goal <= {g['peak_rss_gb']:.0f} GB).", "", "Where the time goes, by phase:", ""]
    for step, phases in rec["phases_s"].items():
        if phases:
            out.append(f"- {step}: " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items() if isinstance(v, (int, float))))
    out += ["", "Runtime matrix (compat), per runtime and variant:", "",
            "| runtime | " + " | ".join(rec["ranges"]) + " | seconds |", "|---|" + "---|" * (len(rec["ranges"]) + 1)]
    for r in rec["runtimes"]:
        cells = [f"{x['status']} ({'in' if x['in_range'] else 'outside'} range, {x['seconds']:.0f} s)"
                 if (x := r["variants"].get(v)) else "-" for v in rec["ranges"]]
        out.append(f"| {r['runtime']} | " + " | ".join(cells) + f" | {r['seconds']:.0f} |")
    out += ["", "Ranges stated: " + "; ".join(f"{v} ({x['layout']}): {x['range']}" for v, x in rec["ranges"].items())
            + ".", "", "| archive | bytes | seconds |", "|---|---|---|"]
    out += [f"| {x['name']} | {x['size']:,} | {x.get('seconds', '-')} |" for x in rec["archives"]]
    out += ["", f"Validation: {'passed' if rec['validation']['passed'] else 'FAILED'}, {rec['validation']['gates']} "
                "gates.", ""] + _long_recording_rows(rec)
    if rec.get("hub"):
        out += ["Published to the loopback Hugging Face Hub (`publish_hub` above; not part of the whole default run's "
                "time), one commit a variant's repo:", "", "| repo | commit | files | bytes |", "|---|---|---|---|"]
        out += [f"| {repo} | {', '.join(c[:12] for c in r['commits'])} | {', '.join(r['files'])} | "
                f"{sum(r['files'].values()):,} |" for repo, r in rec["hub"].items()]
        out.append("")
    if rec["benchmark"]:
        bench = Benchmark.from_json(rec["benchmark"], "benchmark.json")
        out += ["The benchmark step's table (random weights: the encoder's cost is the real model's; the greedy loop's "
                "depends on how many tokens it emits):", "", "```", table(bench), "```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
