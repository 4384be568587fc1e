"""The pipeline's steps over one run's workspace: shared by the DAG's tasks and `convert`.

A plan is the small dict that lays out a run's workspace and choices; `run_step` turns a step
name plus the plan (and, after `source`, the source manifest) into the stage call. The DAG runs
each step in a virtualenv task; `convert` runs each in the same venv as a child process.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .child import INCLUDE
from .errors import InputError, error_for_exit

log = logging.getLogger("nemo2sherpa.pipeline")

# In order. Each step runs in the venv built from requirements/<venv>.txt.
STEPS = ("source", "export", "validate_export", "quantize", "metadata", "validate", "benchmark")
STEP_VENV = {"source": "download", "export": "nemo", "validate_export": "onnx", "quantize": "onnx",
             "metadata": "onnx", "validate": "onnx", "benchmark": "onnx"}


# Validation thresholds a run may set (DAG params, convert flags); None means "report only".
GATE_DEFAULTS: dict[str, float | None] = {
    "int8_wer_max": 0.05,  # int8 text vs fp32 text, over the eval clips
    "fp16_wer_max": 0.05,  # fp16 text vs fp32 text
    "sherpa_wer_max": 0.35,  # sherpa-onnx text vs NeMo's: loose, its fbank front end differs
}


def threshold(value: Any, name: str) -> float | None:
    """A gate threshold from a param or flag: a number >= 0, or none/null for report-only."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "off", "")):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = -1.0
    if not x >= 0:
        raise InputError(f"{name}={value!r} is not a threshold: give a number >= 0 (a WER, 0.05 = 5%) or none")
    return x


def make_plan(ws: Path, source: str, revision: str | None, variants: list[str], gpu: bool,
              lengths: list[float], gates: dict[str, Any] | None = None,
              int8_recipe: str | None = None) -> dict[str, Any]:
    """The run's layout and choices; bad thresholds or an unknown int8 recipe raise InputError here, before any work."""
    from .quantize import int8_recipe as recipe_name

    ws = Path(ws)
    gates = {**GATE_DEFAULTS, **(gates or {})}
    return {"include_dir": str(INCLUDE), "ws": str(ws), "download": str(ws / "download"),
            "bundle": str(ws / "bundle"), "reference": str(ws / "reference"),
            "variants": sorted(set(variants) | {"fp32"}),  # int8 and fp16 are made from fp32
            "source": source, "revision": revision, "gpu": bool(gpu), "lengths": [float(x) for x in lengths],
            "gates": {k: threshold(gates[k], k) for k in GATE_DEFAULTS}, "int8_recipe": recipe_name(int8_recipe)}


def _reduced_variants(plan: dict[str, Any]) -> dict[str, Any]:
    """int8 and fp16 from fp32, each in a child process of its own: at 1.1B each holds the fp32 encoder in
    memory (quantize peaks at ~10 GB), and memory one has used is not always returned to the next."""
    import json

    from .child import run_module_measured
    from .quantize import DEFAULT_INT8_RECIPE

    out: dict[str, Any] = {}
    recipe = plan.get("int8_recipe") or DEFAULT_INT8_RECIPE  # a plan made before recipes existed
    makers = {"int8": ["quantize", "--bundle", plan["bundle"], "--reference", plan["reference"], "--int8-recipe", recipe],
              "fp16": ["fp16", "--bundle", plan["bundle"]]}
    for variant, args in makers.items():
        if variant not in plan["variants"]:
            continue
        proc, usage = run_module_measured(args)
        classified = error_for_exit(proc.returncode, f"making the {variant} variant failed (exit {proc.returncode}); "
                                                     f"its one-line error is above")
        if classified:  # keeps the child's class: permanent and verdicts are not retried
            raise classified
        if proc.returncode != 0:
            raise RuntimeError(f"making the {variant} variant failed (exit {proc.returncode}); its error is above")
        out[variant] = {**json.loads(proc.stdout.strip().splitlines()[-1]), **usage}
        log.info("%s variant made in %.1f s, peak RSS %.2f GB", variant, usage["wall_s"], usage["peak_rss_bytes"] / 1e9)
    if not out:
        log.info("neither int8 nor fp16 requested: nothing to make from fp32")
    return out


def run_step(step: str, plan: dict[str, Any], src: dict[str, Any] | None = None) -> Any:
    from .cli import run_stage

    b, r = plan["bundle"], plan["reference"]
    if step == "source":
        return run_stage("source", source=plan["source"], revision=plan["revision"], download_dir=plan["download"])
    if step == "export":
        from .registry import load_registry
        expect = load_registry().get(src["registry"]) if src.get("registry") else None
        return run_stage("export", nemo=src["path"], bundle=b, reference=r, expect=expect,
                         baseline_lengths=plan["lengths"])
    if step == "validate_export":
        return run_stage("validate", bundle=b, reference=r, variants=["fp32"], mode="pre")
    if step == "quantize":
        return _reduced_variants(plan)
    if step == "metadata":
        return run_stage("metadata", bundle=b, reference=r, source=src)
    if step == "validate":
        return run_stage("validate", bundle=b, reference=r, variants=plan["variants"], mode="full", source=src,
                         report=str(Path(b) / "validation.json"), **plan.get("gates", {}))
    if step == "benchmark":
        return run_stage("benchmark", bundle=b, reference=r, variants=plan["variants"], lengths=plan["lengths"],
                         gpu=plan["gpu"], out=str(Path(b) / "benchmark.json"))
    raise ValueError(f"unknown step {step!r}; steps: {STEPS}")
