"""The pipeline, declared once: its steps, in order, each with its venv, what it runs and what it makes.

The DAG builds one virtualenv task per step from `STEPS` (task id, requirements, queue, docs); `convert`
runs the same steps, each in the same venv, as child processes; `python -m nemo2sherpa step <name>` runs
one over a plan. A plan (records.Plan) lays out a run's workspace and choices (`make_plan`); each step reads its
arguments from it (and, after `source`, from the source manifest, records.Source) and returns a small manifest
(XCom). Stage modules are imported inside the steps: each venv has only its own packages.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .child import INCLUDE, held_credentials, run_module_measured
from .evalset import MAX_CLIPS
from .errors import PermanentError, error_for_exit
from .gates import limits
from .records import Benchmark, Export, Plan, Record, Source, Validation
from .variants import MADE, with_base

log = logging.getLogger("nemo2sherpa.pipeline")


@dataclass(frozen=True)
class Step:
    """One step of the pipeline: a DAG task, a `convert` child process, a `step` command."""

    name: str  # task id
    venv: str  # runs in the venv built from requirements/<venv>.txt
    run: Callable[[Plan, Source | None], Any]  # (plan, source manifest) -> small manifest
    what: str  # one line: the task's doc, the README's table
    makes: str  # what it leaves in the workspace
    verdict: bool = False  # may fail with a validation verdict (GateFailed: at once, never retried)
    needs_source: bool = False  # takes the source step's manifest
    queue: str | None = None  # a Celery queue of its own ("gpu"), else the default
    reads_inputs: bool = False  # reads the run's inputs: gets the Hub's settings and the run's credentials


def make_plan(ws: Path, source: str, revision: str | None, variants: list[str], gpu: bool,
              lengths: list[float], gates: dict[str, Any] | None = None,
              int8_recipe: str | None = None, eval_set: str | None = None,
              eval_max_clips: int | None = None, runtime_matrix: bool = True,
              runtimes: list[str] | None = None) -> Plan:
    """The run's layout and choices; bad thresholds, an unknown int8 recipe, runtimes whose tools this worker cannot
    have (naming each, and how to get it) raise InputError here, before any work."""
    from .runtimes import chosen, missing_toolchains

    from .benchmark import MAX_LENGTH_S
    from .errors import InputError
    from .evalset import MAX_EVAL_CLIPS
    from .quantize import int8_recipe as recipe_name

    if not 1 <= len(lengths) <= 8 or not all(0 < float(x) <= MAX_LENGTH_S for x in lengths):
        raise InputError(f"benchmark clip lengths {list(lengths)}: give 1 to 8 lengths, each over 0 and at most "
                         f"{MAX_LENGTH_S:g} s")
    if eval_max_clips is not None and not 1 <= int(eval_max_clips) <= MAX_EVAL_CLIPS:
        raise InputError(f"evaluation clips at most {eval_max_clips}: give 1 to {MAX_EVAL_CLIPS}")
    kinds = chosen(runtimes)
    missing = missing_toolchains(kinds) if runtime_matrix else []
    if missing:
        raise InputError("the runtime matrix cannot run on this worker: " + "; ".join(missing) + " (nothing was done)")
    ws = Path(ws)
    return Plan(include_dir=INCLUDE, ws=ws, download=ws / "download", bundle=ws / "bundle",
                reference=ws / "reference", variants=with_base(variants), source=source, revision=revision,
                gpu=bool(gpu), lengths=[float(x) for x in lengths], gates=limits(gates),
                int8_recipe=recipe_name(int8_recipe), eval_set=(eval_set or "").strip() or None, eval=ws / "eval",
                eval_max_clips=int(eval_max_clips or MAX_CLIPS), runtime_matrix=bool(runtime_matrix), runtimes=kinds)


def _source(plan: Plan, src: Source | None) -> Source:
    from .evalset import with_eval_set
    from .source import resolve_source

    found = resolve_source(plan.source, plan.revision, plan.download)
    return with_eval_set(found, plan.eval_set, plan.eval, plan.eval_max_clips)


def _export(plan: Plan, src: Source | None) -> Any:
    from .export import export_nemo, summary
    from .registry import load_registry

    src = _needed(src)
    expect = load_registry().get(src.registry) if src.registry else None
    evalset = src.eval_set
    return summary(export_nemo(Path(src.path), plan.bundle, plan.reference,
                               clips_dir=evalset.dir if evalset else None, expect=expect,
                               baseline_lengths=plan.lengths, eval_record=evalset, source=src))


def _needed(src: Source | None) -> Source:
    """The source manifest of a step that reads it (Step.needs_source)."""
    if src is None:
        raise ValueError("this step reads the source step's manifest: give it (--source-json)")
    return src


def _validate_export(plan: Plan, src: Source | None) -> Any:
    from .validate import summary, validate_bundle
    from .variants import BASE

    return summary(validate_bundle(plan.bundle, plan.reference, [BASE.name], mode="pre"))


def make_variants(plan: Plan, src: Source | None = None) -> dict[str, Any]:
    """The variants made from fp32 (int8, fp16: variants.MADE), each by its module in a child process of its own:
    at 1.1B each holds the fp32 encoder in memory (quantize peaks at ~10 GB), and memory one has used is not
    always returned to the next."""
    out: dict[str, Any] = {}
    for v in (v for v in MADE if v.name in plan.variants):
        options = {k: plan.option(k) for k in v.options}
        proc, usage = run_module_measured(["make-variant", v.name, "--bundle", str(plan.bundle), "--reference",
                                           str(plan.reference), "--options", json.dumps(options)])
        classified = error_for_exit(proc.returncode, f"making the {v.name} variant failed (exit {proc.returncode}); "
                                                     f"its one-line error is above")
        if classified:  # keeps the child's class: permanent and verdicts are not retried
            raise classified
        if proc.returncode != 0:  # nobody classified it: permanent (a retry would do it again)
            how = (f"killed by signal {-proc.returncode}" + (" (the kernel's out-of-memory killer, most likely: it "
                                                             "needs ~2.5x the fp32 encoder's size)"
                                                             if proc.returncode == -9 else "")
                   if proc.returncode < 0 else f"exit {proc.returncode}")
            raise PermanentError(f"making the {v.name} variant failed ({how}); its error is above")
        out[v.name] = {**json.loads(proc.stdout.strip().splitlines()[-1]), **usage}
        log.info("%s variant made in %.1f s, peak RSS %.2f GB", v.name, usage["wall_s"], usage["peak_rss_bytes"] / 1e9)
    if not out:
        log.info("no variant but fp32 requested: nothing to make from fp32")
    return out


def _metadata(plan: Plan, src: Source | None) -> Any:
    from .metadata import apply_metadata

    return apply_metadata(plan.bundle, Export.read(plan.reference).model_spec(), src)


def _validate(plan: Plan, src: Source | None) -> Any:
    from .validate import summary, validate_bundle

    return summary(validate_bundle(plan.bundle, plan.reference, plan.variants, mode="full", source=src,
                                   report_path=plan.bundle / Validation.FILE, **plan.gates))


def _compat(plan: Plan, src: Source | None) -> Any:
    from .compat import check_runtimes, summary

    if not plan.runtime_matrix:
        log.info("runtime matrix off for this run (runtime_matrix): no runtime but the reference was checked")
        return {"skipped": "runtime_matrix is off"}
    return summary(check_runtimes(plan.bundle, plan.reference, plan.variants, kinds=plan.runtimes))


def _package(plan: Plan, src: Source | None) -> Any:
    from .archive import package
    from .registry import load_registry

    src = _needed(src)
    entry = load_registry().get(src.registry or "", {})
    return package(plan.bundle, plan.reference, plan.variants, src, entry.get("license"))


def _benchmark(plan: Plan, src: Source | None) -> Any:
    from .benchmark import p50s, run_benchmark

    return p50s(run_benchmark(plan.bundle, plan.reference, plan.variants, plan.lengths, gpu=plan.gpu,
                              out_path=plan.bundle / Benchmark.FILE))


STEPS: tuple[Step, ...] = (
    Step("source", "download", _source, "resolve the checkpoint (registry name, Hub repo at a revision, local "
         ".nemo) and download it, sha256 checked; the evaluation set read, checked and resampled to the model's "
         "rate", "download/<name>.nemo, eval/", reads_inputs=True),
    Step("export", "nemo", _export, "NeMo restore (weights only, memory-mapped); encoder, decoder and joiner exported "
         "one by one (an encoder over 2 GB with its weights in encoder.weights), sherpa-onnx's metadata on "
         "encoder.onnx; tokens.txt, bpe.vocab; PyTorch reference tensors and NeMo's transcripts of the evaluation "
         "clips", "bundle/ (fp32), reference/", needs_source=True),
    Step("validate_export", "onnx", _validate_export, "structure, numeric parity and greedy decoding parity of the "
         "fp32 bundle against PyTorch, recorded with the files' sha256 (validate reuses it for the same bytes)",
         "reference/validate_export.json", verdict=True),
    Step("quantize", "onnx", make_variants, "the variants made from fp32 (" + ", ".join(v.name for v in MADE)
         + "), each by its module in its own process",
         "bundle/" + ", ".join(f"*{v.suffix}.onnx" for v in MADE) + " and their reports in reference/", verdict=True),
    Step("metadata", "onnx", _metadata, "sherpa-onnx's keys on every encoder that lacks them (the variants made "
         "from fp32), derived from the model config", "metadata in bundle/encoder*.onnx", needs_source=True),
    Step("validate", "onnx", _validate, "every gate per variant, metadata, sherpa-onnx decoding every clip (greedy, "
         "beam search, hotwords; one child process a variant, beside the in-process gates); the size and sha256 of "
         "every file it passed", "bundle/validation.json, VALIDATION.md", verdict=True, needs_source=True),
    Step("compat", "onnx", _compat, "the runtime matrix: each variant's layout has its range of sherpa-onnx releases; "
         "the releases at its edges and the newest of each kind users ship (the CLI, sherpa-onnx-node, the C API "
         "from Rust) decode it, compared token for token with the reference", "bundle/compatibility.json, "
         "VALIDATION.md with the matrix", verdict=True),
    Step("package", "onnx", _package, "one release archive a variant, named and laid out as sherpa-onnx's own NeMo "
         "releases, with test_wavs/ and a README.md model card (source, license, figures, the variant's supported "
         "range, usage); made from exactly the bytes validate passed", "bundle/sherpa-onnx-nemo-<model>[-<variant>]"
         ".tar (fp32) or .tar.gz (int8), README.md", needs_source=True),
    Step("benchmark", "onnx", _benchmark, "latency per variant and clip length: sherpa-onnx and onnxruntime on "
         "CPU, NeMo's baseline, onnxruntime CUDA when asked", "bundle/benchmark.json, benchmark.png", queue="gpu"),
)
STEP: dict[str, Step] = {s.name: s for s in STEPS}


def run_step(name: str, plan: Plan, src: Source | None = None) -> Any:
    """One step over a plan, in this process (the step's venv): its small manifest, as JSON (XCom, stdout)."""
    if name not in STEP:
        raise ValueError(f"unknown step {name!r}; steps: {', '.join(STEP)}")
    held = held_credentials()
    log.info("step %s: %s", name, "credentials and Airflow settings in its environment: " + ", ".join(held) if held
             else "holds no credential, Airflow connection or variable")
    out = STEP[name].run(plan, src)
    return out.to_json() if isinstance(out, Record) else out
