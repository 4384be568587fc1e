"""`python -m nemo2sherpa <stage> ...`: every stage without Airflow.

Each stage prints its small JSON manifest as the last line of stdout. Bad input (any permanent
error) exits 2 with one line `nemo2sherpa: error: ...`; a failed validation gate exits 3; a
transient fault (the Hub or the store unreachable) exits 4: running it again may pass.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from .errors import (EXIT_CODES, PERMANENT, TRANSIENT, VERDICT, GateFailed, InputError, PermanentError,
                     TransientError)
from .quantize import DEFAULT_INT8_RECIPE, INT8_RECIPES

log = logging.getLogger("nemo2sherpa")


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr, force=True)


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def run_stage(stage: str, **kw: Any) -> Any:
    """Run one stage in this process (the venv tasks call this)."""
    if stage == "source":
        from .source import resolve_source
        return resolve_source(kw["source"], kw.get("revision"), Path(kw["download_dir"]))
    if stage == "upstream":
        from .source import upstream_revision
        return upstream_revision(kw["source"], kw.get("revision"))
    if stage == "export":
        from .export import export_nemo
        m = export_nemo(Path(kw["nemo"]), Path(kw["bundle"]), Path(kw["reference"]), expect=kw.get("expect"),
                        baseline_lengths=kw.get("baseline_lengths"))
        return {k: m[k] for k in ("spec", "params", "files", "timings_s")}
    if stage == "validate":
        from .pipeline import GATE_DEFAULTS, threshold
        from .validate import validate_bundle
        gates = {k: threshold(kw.get(k, d), k) for k, d in GATE_DEFAULTS.items()}
        r = validate_bundle(Path(kw["bundle"]), Path(kw["reference"]), kw["variants"], kw.get("mode", "full"),
                            kw.get("source") or {}, Path(kw["report"]) if kw.get("report") else None, **gates)
        return {"passed": r["passed"], "gates": len(r["gates"]), "mode": r["mode"], "thresholds": r["thresholds"],
                "max_abs_diff": {v: x.get("max_abs_diff") for v, x in r["variants"].items()},
                "encoder_rel_err": {v: x.get("encoder_rel_err") for v, x in r["variants"].items()},
                "int8_recipe": r.get("int8", {}).get("recipe"),
                "token_match": {v: x.get("decoding", {}).get("token_match_rate") for v, x in r["variants"].items()},
                "wer_vs_fp32": {v: x["decoding"]["wer_vs_fp32"] for v, x in r["variants"].items()
                                if "wer_vs_fp32" in x.get("decoding", {})},
                "sherpa_wer_vs_nemo": {v: x["sherpa"].get("wer_vs_nemo") for v, x in r["variants"].items()
                                       if "sherpa" in x}}
    if stage == "quantize":
        from .quantize import quantize_bundle
        return quantize_bundle(Path(kw["bundle"]), frugal=not kw.get("stock_quantizer"), recipe=kw.get("int8_recipe"),
                               reference=Path(kw["reference"]) if kw.get("reference") else None)
    if stage == "fp16":
        from .fp16 import fp16_bundle
        return fp16_bundle(Path(kw["bundle"]))
    if stage == "metadata":
        from .metadata import apply_metadata
        from .modelspec import ModelSpec
        spec = ModelSpec.from_dict(json.loads((Path(kw["reference"]) / "export.json").read_text())["spec"])
        return apply_metadata(Path(kw["bundle"]), spec, kw.get("source") or {})
    if stage == "benchmark":
        from .benchmark import run_benchmark
        r = run_benchmark(Path(kw["bundle"]), Path(kw["reference"]), kw["variants"], [float(x) for x in kw["lengths"]],
                          int(kw.get("runs", 5)), int(kw.get("threads", 2)), bool(kw.get("gpu")),
                          Path(kw["out"]) if kw.get("out") else None)
        return {v: {L: s["p50_s"] for L, s in x["by_length"].items()} for v, x in r["cpu"].items()}
    raise ValueError(f"unknown stage {stage}")


# Shared by the quantize stage and convert.
INT8_RECIPE_FLAG = ("--int8-recipe", {"choices": list(INT8_RECIPES), "default": DEFAULT_INT8_RECIPE,
                                      "help": "how int8 is made; " + "; ".join(f"{k}: {r.summary}"
                                                                                for k, r in INT8_RECIPES.items())})

STAGE_ARGS = {
    "source": [("--source", {"required": True}), ("--revision", {}), ("--download-dir", {"required": True})],
    "upstream": [("--source", {"required": True}), ("--revision", {})],
    "export": [("--nemo", {"required": True}), ("--bundle", {"required": True}), ("--reference", {"required": True}),
               ("--baseline-lengths", {"help": "also time NeMo transcribe() at these clip lengths (s), e.g. 2,5"})],
    "validate": [("--bundle", {"required": True}), ("--reference", {"required": True}),
                 ("--variants", {"default": "fp32,int8"}), ("--mode", {"default": "full", "choices": ["pre", "full"]}),
                 ("--source-json", {}), ("--report", {}),
                 ("--int8-wer-max", {"help": "int8 WER drift vs fp32 allowed (default 0.05; none: report only)"}),
                 ("--fp16-wer-max", {"help": "fp16 WER drift vs fp32 allowed (default 0.05; none: report only)"}),
                 ("--sherpa-wer-max", {"help": "sherpa-onnx WER vs NeMo allowed (default 0.35; none: report only)"})],
    "quantize": [("--bundle", {"required": True}),
                 ("--reference", {"help": "also write the report (recipe, rewrite check) to <reference>/quantize.json"}),
                 INT8_RECIPE_FLAG,
                 ("--stock-quantizer", {"action": "store_true",
                                        "help": "onnxruntime's quantizer as shipped (one more fp32 copy in memory)"})],
    "fp16": [("--bundle", {"required": True})],
    "metadata": [("--bundle", {"required": True}), ("--reference", {"required": True}), ("--source-json", {})],
    "benchmark": [("--bundle", {"required": True}), ("--reference", {"required": True}),
                  ("--variants", {"default": "fp32,int8"}), ("--lengths", {"default": "2,5"}),
                  ("--runs", {"default": "5"}), ("--threads", {"default": "2"}), ("--gpu", {"action": "store_true"}),
                  ("--out", {})],
}


def convert(src: str, out: Path, variants: list[str], revision: str | None = None, lengths: str = "2,5",
            gpu: bool = False, gates: dict[str, Any] | None = None, int8_recipe: str | None = None) -> dict[str, Any]:
    """The command-line conversion: every pipeline step in the DAG's venv for it, no publish."""
    from . import venvs
    from .child import run_module_measured
    from .pipeline import STEP_VENV, STEPS, make_plan
    from .source import classify

    classify(src)  # refuses bad input before any venv is built
    out = Path(out).resolve()
    work = out.parent / f".{out.name}.work"
    plan = make_plan(work, src, revision, variants, gpu, [float(x) for x in _csv(lengths)], gates,
                     int8_recipe)  # checks thresholds and the recipe
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not empty; give a new folder (nothing was written)")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    plan_json, source_json = work / "plan.json", work / "source.json"
    plan_json.write_text(json.dumps(plan))
    results: dict[str, Any] = {}
    steps: dict[str, dict[str, Any]] = {}
    try:
        for step in STEPS:
            args = ["step", step, "--plan", str(plan_json)] + (["--source-json", str(source_json)] if "source" in results else [])
            proc, usage = run_module_measured(args, python=venvs.ensure(STEP_VENV[step]) / "bin" / "python")
            steps[step] = usage
            if proc.returncode in EXIT_CODES.values():
                raise SystemExit(proc.returncode)  # the child printed its one-line error (permanent, verdict, transient)
            if proc.returncode != 0:
                raise SystemExit(f"nemo2sherpa: step {step} failed (exit {proc.returncode}); see the log above")
            log.info("step %-15s done in %7.1f s, peak RSS %6.2f GB", step, usage["wall_s"], usage["peak_rss_bytes"] / 1e9)
            results[step] = json.loads(proc.stdout.strip().splitlines()[-1])
            if step == "source":
                source_json.write_text(json.dumps(results["source"]))
        bundle = Path(plan["bundle"])
        shutil.copy2(Path(plan["reference"]) / "export.json", bundle / "export.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.rmdir()
        os.replace(bundle, out)  # the bundle appears whole or not at all
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
    return {"out": str(out), "source": results["source"], "validation": results["validate"],
            "benchmark_p50_s": results["benchmark"], "steps": steps, "files": sizes,
            "reduced_variants": results.get("quantize", {})}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="nemo2sherpa", description="NeMo Parakeet-TDT -> sherpa-onnx, stage by stage")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, args in STAGE_ARGS.items():
        p = sub.add_parser(name)
        for flag, opts in args:
            p.add_argument(flag, **opts)
    p = sub.add_parser("convert", help="all stages in their venvs, no publish")
    p.add_argument("src")
    p.add_argument("out", type=Path)
    p.add_argument("--variants", default="fp32,int8")
    p.add_argument("--revision")
    p.add_argument("--lengths", default="2,5")
    p.add_argument("--gpu", action="store_true")
    for flag, opts in STAGE_ARGS["validate"][-3:]:
        p.add_argument(flag, **opts)
    p.add_argument(INT8_RECIPE_FLAG[0], **INT8_RECIPE_FLAG[1])
    p = sub.add_parser("step", help="one pipeline step over a plan (what a DAG task runs)")
    p.add_argument("step")
    p.add_argument("--plan", type=Path, required=True)
    p.add_argument("--source-json", type=Path)
    p = sub.add_parser("venv", help="create (if needed) and print a stage venv")
    p.add_argument("name")
    p = sub.add_parser("sherpa-decode")
    p.add_argument("--bundle", required=True)
    p.add_argument("--variant", default="fp32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("wavs", nargs="+")
    p = sub.add_parser("bench-gpu")  # in the onnx-gpu venv, from the benchmark stage
    for flag in ("--bundle", "--reference", "--variants", "--lengths"):
        p.add_argument(flag, required=True)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p = sub.add_parser("bench-sherpa")
    for flag in ("--bundle", "--variant", "--lengths"):
        p.add_argument(flag, required=True)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    setup_logging()
    try:
        if a.cmd == "venv":
            from . import venvs
            print(venvs.ensure(a.name))
            return 0
        if a.cmd == "sherpa-decode":
            from .sherpa import decode_files
            print(json.dumps(decode_files(Path(a.bundle), a.variant, [Path(w) for w in a.wavs], a.threads)))
            return 0
        if a.cmd == "bench-sherpa":
            from .benchmark import sherpa_cpu
            print(json.dumps(sherpa_cpu(Path(a.bundle), a.variant, [float(x) for x in _csv(a.lengths)], a.runs, a.threads)))
            return 0
        if a.cmd == "bench-gpu":
            from .benchmark import cuda_runs
            print(json.dumps(cuda_runs(Path(a.bundle), Path(a.reference), _csv(a.variants),
                                       [float(x) for x in _csv(a.lengths)], a.runs, a.threads)))
            return 0
        if a.cmd == "step":
            from .pipeline import run_step
            src = json.loads(a.source_json.read_text()) if a.source_json else None
            print(json.dumps(run_step(a.step, json.loads(a.plan.read_text()), src), default=str))
            return 0
        if a.cmd == "convert":
            from .pipeline import GATE_DEFAULTS
            r = convert(a.src, a.out, _csv(a.variants), a.revision, a.lengths, a.gpu,
                        {k: getattr(a, k) for k in GATE_DEFAULTS if getattr(a, k) is not None}, a.int8_recipe)
            print(json.dumps(r))
            return 0
        kw = {k: v for k, v in vars(a).items() if k != "cmd" and v is not None}
        if "variants" in kw:
            kw["variants"] = _csv(kw["variants"])
        for k in ("lengths", "baseline_lengths"):
            if k in kw:
                kw[k] = _csv(kw[k])
        if "source_json" in kw:
            kw["source"] = json.loads(Path(kw.pop("source_json")).read_text())
        print(json.dumps(run_stage(a.cmd, **kw), default=str))
        return 0
    except PermanentError as e:
        print(f"nemo2sherpa: error: {e}", file=sys.stderr)
        return EXIT_CODES[PERMANENT]
    except GateFailed as e:
        print(f"nemo2sherpa: validation failed: {e}", file=sys.stderr)
        return EXIT_CODES[VERDICT]
    except TransientError as e:
        print(f"nemo2sherpa: transient error (try again): {e}", file=sys.stderr)
        return EXIT_CODES[TRANSIENT]
