"""The pipeline, declared once: its steps, in order, each with its venv, what it runs and what it makes.

The DAG builds one virtualenv task per step from `STEPS` (task id, requirements, queue, docs); `convert`
runs the same steps, each in the same venv, as child processes; `python -m nemo2sherpa step <name>` runs
one over a plan. A plan (records.Plan) lays out a run's workspace and choices (`make_plan`). Each step declares its
arguments as a dataclass (`Step.inputs`), makes them from the plan (and, after `source`, from the source manifest,
records.Source: `Step.args`), and runs its one call over them (`Step.run`), which returns a small manifest (XCom);
`python -m nemo2sherpa <step>` makes the same arguments from flags (cli.step_command). Stage modules are imported
inside the steps: each venv has only its own packages.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from . import localattn
from .benchmark import DEFAULT_LENGTHS as BENCHMARK_LENGTHS
from .child import INCLUDE, held_credentials, run_module_measured
from .evalset import MAX_CLIPS
from .errors import PermanentError, error_for_exit
from .gates import limits
from .records import (Benchmark, CompatSummary, Export, ExportSummary, MadeReport, MetadataResult, PackageResult,
                      Plan, Source, Validation, ValidationSummary, dump)
from .variants import BASE, DEFAULT_VARIANTS, MADE, with_base

log = logging.getLogger("nemo2sherpa.pipeline")


@dataclass(frozen=True)
class Step:
    """One step of the pipeline: a DAG task, a `convert` child process, a `step` command, and (`command`) the
    `python -m nemo2sherpa <command>` that runs it from flags. Its call is declared once (`run`, over its arguments'
    record `inputs`); `args` makes those arguments from a run's plan and source manifest."""

    name: str  # task id
    venv: str  # runs in the venv built from requirements/<venv>.txt
    inputs: type  # its arguments: a dataclass whose fields are the command's flags
    args: Callable[[Plan, Source | None], Any]  # (plan, source manifest) -> its arguments (an `inputs`)
    run: Callable[[Any], Any]  # its arguments -> its small manifest
    what: str  # one line: the task's doc, the README's table
    makes: str  # what it leaves in the workspace
    verdict: bool = False  # may fail with a validation verdict (GateFailed: at once, never retried)
    needs_source: bool = False  # takes the source step's manifest
    queue: str | None = None  # a Celery queue of its own ("gpu"), else the default
    reads_inputs: bool = False  # reads the run's inputs: gets the Hub's settings and the run's credentials
    command: str | None = ""  # its command's name ("": the step's own; None: another step's command runs it)


def make_plan(ws: Path, source: str, *, revision: str | None = None, variants: list[str], gpu: bool = False,
              lengths: list[float], gates: dict[str, Any] | None = None, int8_recipe: str | None = None,
              eval_set: str | None = None, eval_max_clips: int | None = None, runtime_matrix: bool = True,
              runtimes: list[str] | None = None, local_attention: str | list[int] | None = None) -> Plan:
    """The run's layout and choices; bad thresholds, an unknown int8 recipe, a malformed local attention, runtimes
    whose tools this worker cannot have (naming each, and how to get it) raise InputError here, before any work."""
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
    try:
        context = localattn.parse(local_attention)
    except ValueError as e:
        raise InputError(f"{e} (nothing was done)") from None
    kinds = chosen(runtimes)
    missing = missing_toolchains(kinds) if runtime_matrix else []
    if missing:
        raise InputError("the runtime matrix cannot run on this worker: " + "; ".join(missing) + " (nothing was done)")
    ws = Path(ws)
    return Plan(include_dir=INCLUDE, ws=ws, download=ws / "download", bundle=ws / "bundle",
                reference=ws / "reference", variants=with_base(variants), source=source, revision=revision,
                gpu=bool(gpu), lengths=[float(x) for x in lengths], gates=limits(gates),
                int8_recipe=recipe_name(int8_recipe), eval_set=(eval_set or "").strip() or None, eval=ws / "eval",
                eval_max_clips=int(eval_max_clips or MAX_CLIPS), runtime_matrix=bool(runtime_matrix), runtimes=kinds,
                local_attention=list(context) if context else None)


def _variants() -> list[str]:
    return list(DEFAULT_VARIANTS)


@dataclass(frozen=True, kw_only=True)
class SourceArgs:
    """The source step's arguments: the checkpoint and the evaluation set, and where they go."""

    source: str
    revision: str | None = None
    download_dir: Path
    eval_set: str | None = None
    eval_max_clips: int | None = None
    eval_dir: Path | None = field(default=None, metadata={"help": "where the prepared set goes (default: "
                                                                  "<download-dir>/eval)"})


def source_step(x: SourceArgs) -> Source:
    """The checkpoint resolved and downloaded, its evaluation set prepared: the source manifest."""
    from .evalset import with_eval_set
    from .source import resolve_source

    found = resolve_source(x.source, x.revision, x.download_dir)
    return with_eval_set(found, x.eval_set, x.eval_dir or x.download_dir / "eval", x.eval_max_clips)


@dataclass(frozen=True, kw_only=True)
class ExportArgs:
    """The export step's arguments: the checkpoint, where the bundle and the reference go, and (from the source
    manifest) its registry entry and evaluation set."""

    nemo: Path
    bundle: Path
    reference: Path
    source: Source | None = field(default=None, metadata={"help": "the source step's manifest: the registry entry "
                                                                   "to check against and the prepared evaluation set"})
    clips_dir: Path | None = field(default=None, metadata={"help": "a prepared evaluation set (wav files + texts.tsv, "
                                                                   "as `source` leaves it); default: the source "
                                                                   "manifest's, else the four built-in clips"})
    baseline_lengths: list[float] | None = field(default=None, metadata={
        "help": "also time NeMo transcribe() at these clip lengths (s), e.g. 2,5"})
    local_attention: list[int] | None = field(default=None, metadata={
        "help": "export with local attention, LEFT,RIGHT encoder frames each side (e.g. 128,128): memory linear in "
                "the length (localattn); default the checkpoint's own attention"})


def export_step(x: ExportArgs) -> ExportSummary:
    """NeMo's export of the checkpoint, checked against its registry entry; the step's small manifest."""
    from .export import export_nemo, summary
    from .registry import entry_of

    evalset = x.source.eval_set if x.source else None
    clips_dir = x.clips_dir or (evalset.dir if evalset else None)
    return summary(export_nemo(x.nemo, x.bundle, x.reference, clips_dir=clips_dir, expect=entry_of(x.source),
                               baseline_lengths=x.baseline_lengths, eval_record=evalset, source=x.source,
                               local_attention=x.local_attention))


def _export_args(plan: Plan, src: Source | None) -> ExportArgs:
    src = _needed(src)
    return ExportArgs(nemo=Path(src.path), bundle=plan.bundle, reference=plan.reference, source=src,
                      baseline_lengths=plan.lengths, local_attention=plan.local_attention)


def _needed(src: Source | None) -> Source:
    """The source manifest of a step that reads it (Step.needs_source)."""
    if src is None:
        raise ValueError("this step reads the source step's manifest: give it (--source-json)")
    return src


@dataclass(frozen=True, kw_only=True)
class ValidateArgs:
    """A validate step's arguments: the bundle, its reference, the variants, the mode (pre: after export; full:
    after metadata), the source manifest, where the report goes and the run's gate limits."""

    bundle: Path
    reference: Path
    variants: list[str] = field(default_factory=_variants)
    mode: str = field(default="full", metadata={"choices": ["pre", "full"]})
    source: Source | None = None
    report: Path | None = field(default=None, metadata={"help": "write validation.json here, VALIDATION.md beside"})
    gates: dict[str, float | None] = field(default_factory=dict)  # gates.GATES by param name: the run's limits


def validate_step(x: ValidateArgs) -> ValidationSummary:
    """The gates over the bundle; the step's small manifest (GateFailed when one fails)."""
    from .validate import summary, validate_bundle

    return summary(validate_bundle(x.bundle, x.reference, x.variants, x.mode, x.source, x.report, **x.gates))


@dataclass(frozen=True, kw_only=True)
class QuantizeArgs:
    """The quantize step's arguments: the bundle, its reference, the variants to make and the run's options."""

    bundle: Path
    reference: Path
    variants: list[str] = field(default_factory=_variants)
    int8_recipe: str | None = None

    def option(self, name: str) -> Any:
        """One of the run's choices by name (a variant maker's options: variants.Variant.options)."""
        return getattr(self, name)


def make_variants(x: QuantizeArgs) -> dict[str, MadeReport]:
    """The variants made from fp32 (int8, fp16: variants.MADE), each by its module in a child process of its own:
    at 1.1B each holds the fp32 encoder in memory (quantize peaks at ~10 GB), and memory one has used is not
    always returned to the next."""
    out: dict[str, MadeReport] = {}
    for v in (v for v in MADE if v.name in x.variants):
        options = {k: x.option(k) for k in v.options}
        proc, usage = run_module_measured(["make-variant", v.name, "--bundle", str(x.bundle), "--reference",
                                           str(x.reference), "--options", json.dumps(options)])
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
        out[v.name] = replace(MadeReport.from_json(json.loads(proc.stdout.strip().splitlines()[-1]), v.name),
                              usage=usage)
        log.info("%s variant made in %.1f s, peak RSS %.2f GB", v.name, usage.wall_s, usage.peak_rss_bytes / 1e9)
    if not out:
        log.info("no variant but fp32 requested: nothing to make from fp32")
    return out


@dataclass(frozen=True, kw_only=True)
class BundleArgs:
    """A step's arguments that reads the bundle, its reference and the source manifest (metadata)."""

    bundle: Path
    reference: Path
    source: Source | None = None


def metadata_step(x: BundleArgs) -> MetadataResult:
    """sherpa-onnx's keys on every encoder that lacks them, from export's spec; the step's small manifest."""
    from .metadata import apply_metadata

    return apply_metadata(x.bundle, Export.read(x.reference).model_spec(), x.source)


@dataclass(frozen=True, kw_only=True)
class CompatArgs:
    """The compat step's arguments: the bundle, its reference, the variants, the runtime kinds; whether the runtime
    matrix runs at all."""

    bundle: Path
    reference: Path
    variants: list[str] = field(default_factory=_variants)
    runtimes: list[str] | None = None
    runtime_matrix: bool = True


def compat_step(x: CompatArgs) -> CompatSummary:
    """The runtime matrix over the validated bundle; the step's small manifest (skipped when it is off)."""
    from .compat import check_runtimes, summary

    if not x.runtime_matrix:
        log.info("runtime matrix off for this run (runtime_matrix): no runtime but the reference was checked")
        return CompatSummary(skipped="runtime_matrix is off")
    return summary(check_runtimes(x.bundle, x.reference, x.variants, kinds=x.runtimes))


@dataclass(frozen=True, kw_only=True)
class PackageArgs:
    """The package step's arguments: the bundle, its reference, the variants, the source manifest and the
    checkpoint's license (from its registry entry in a run)."""

    bundle: Path
    reference: Path
    variants: list[str] = field(default_factory=_variants)
    source: Source
    license: str | None = field(default=None, metadata={"help": "the checkpoint's license, for the card"})


def package_step(x: PackageArgs) -> PackageResult:
    """One release archive a variant and the model card; their names, sizes and sha256s."""
    from .archive import package

    return package(x.bundle, x.reference, x.variants, x.source, x.license)


def _package_args(plan: Plan, src: Source | None) -> PackageArgs:
    from .registry import entry_of

    src = _needed(src)
    entry = entry_of(src)
    return PackageArgs(bundle=plan.bundle, reference=plan.reference, variants=plan.variants, source=src,
                       license=entry.license if entry else None)


@dataclass(frozen=True, kw_only=True)
class BenchmarkArgs:
    """The benchmark step's arguments: the bundle, its reference, the variants, the clip lengths, the timed runs and
    threads, whether onnxruntime CUDA runs too, where benchmark.json (and .png) go."""

    bundle: Path
    reference: Path
    variants: list[str] = field(default_factory=_variants)
    lengths: list[float] = field(default_factory=lambda: list(BENCHMARK_LENGTHS))
    runs: int = 5
    threads: int = 2
    gpu: bool = False
    out: Path | None = None


def benchmark_step(x: BenchmarkArgs) -> dict[str, dict[str, float]]:
    """Latency per variant and clip length; the step's small manifest (sherpa-onnx CPU p50s)."""
    from .benchmark import p50s, run_benchmark

    return p50s(run_benchmark(x.bundle, x.reference, x.variants, x.lengths, x.runs, x.threads, x.gpu, x.out))


STEPS: tuple[Step, ...] = (
    Step("source", "download", SourceArgs, lambda plan, src: SourceArgs(
        source=plan.source, revision=plan.revision, download_dir=plan.download, eval_set=plan.eval_set,
        eval_max_clips=plan.eval_max_clips, eval_dir=plan.eval), source_step,
         "resolve the checkpoint (registry name, Hub repo at a revision, local "
         ".nemo) and download it, sha256 checked; the evaluation set read, checked and resampled to the model's "
         "rate", "download/<name>.nemo, eval/", reads_inputs=True),
    Step("export", "nemo", ExportArgs, _export_args, export_step, "NeMo restore (weights only, memory-mapped); "
         "encoder, decoder and joiner exported one by one (an encoder over 2 GB with its weights in encoder.weights), "
         "sherpa-onnx's metadata on encoder.onnx; tokens.txt, bpe.vocab; PyTorch reference tensors and NeMo's "
         "transcripts of the evaluation clips", "bundle/ (fp32), reference/", needs_source=True),
    Step("validate_export", "onnx", ValidateArgs, lambda plan, src: ValidateArgs(
        bundle=plan.bundle, reference=plan.reference, variants=[BASE.name], mode="pre"), validate_step,
         "structure, numeric parity and greedy decoding parity of the "
         "fp32 bundle against PyTorch, recorded with the files' sha256 (validate reuses it for the same bytes)",
         "reference/validate_export.json", verdict=True, command=None),
    Step("quantize", "onnx", QuantizeArgs, lambda plan, src: QuantizeArgs(
        bundle=plan.bundle, reference=plan.reference, variants=plan.variants, int8_recipe=plan.int8_recipe),
         make_variants, "the variants made from fp32 (" + ", ".join(v.name for v in MADE)
         + "), each by its module in its own process",
         "bundle/" + ", ".join(f"*{v.suffix}.onnx" for v in MADE) + " and their reports in reference/", verdict=True,
         command="make-variants"),
    Step("metadata", "onnx", BundleArgs, lambda plan, src: BundleArgs(
        bundle=plan.bundle, reference=plan.reference, source=src), metadata_step,
         "sherpa-onnx's keys on every encoder that lacks them (the variants made "
         "from fp32), derived from the model config", "metadata in bundle/encoder*.onnx", needs_source=True),
    Step("validate", "onnx", ValidateArgs, lambda plan, src: ValidateArgs(
        bundle=plan.bundle, reference=plan.reference, variants=plan.variants, mode="full", source=src,
        report=plan.bundle / Validation.FILE, gates=plan.gates), validate_step,
         "every gate per variant, metadata, sherpa-onnx decoding every clip (greedy, "
         "beam search, hotwords; one child process a variant, beside the in-process gates); the size and sha256 of "
         "every file it passed", "bundle/validation.json, VALIDATION.md", verdict=True, needs_source=True),
    Step("compat", "onnx", CompatArgs, lambda plan, src: CompatArgs(
        bundle=plan.bundle, reference=plan.reference, variants=plan.variants, runtimes=plan.runtimes,
        runtime_matrix=plan.runtime_matrix), compat_step,
         "the runtime matrix: each variant's layout has its range of sherpa-onnx releases; "
         "the releases at its edges and the newest of each kind users ship (the CLI, sherpa-onnx-node, the C API "
         "from Rust) decode it, compared token for token with the reference", "bundle/compatibility.json, "
         "VALIDATION.md with the matrix", verdict=True),
    Step("package", "onnx", PackageArgs, _package_args, package_step,
         "one release archive a variant, named and laid out as sherpa-onnx's own NeMo "
         "releases, with test_wavs/ and a README.md model card (source, license, figures, the variant's supported "
         "range, usage); made from exactly the bytes validate passed", "bundle/sherpa-onnx-nemo-<model>[-<variant>]"
         ".tar (fp32) or .tar.gz (int8), README.md", needs_source=True),
    Step("benchmark", "onnx", BenchmarkArgs, lambda plan, src: BenchmarkArgs(
        bundle=plan.bundle, reference=plan.reference, variants=plan.variants, lengths=plan.lengths, gpu=plan.gpu,
        out=plan.bundle / Benchmark.FILE), benchmark_step,
         "latency per variant and clip length: sherpa-onnx and onnxruntime on "
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
    step = STEP[name]
    out = step.run(step.args(plan, src))
    return dump(out)
