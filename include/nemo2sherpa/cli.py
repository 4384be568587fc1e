"""`python -m nemo2sherpa <command> ...`: every stage without Airflow, one table of commands.

Each command prints its small JSON manifest as the last line of stdout. Bad input (any permanent
error) exits 2 with one line `nemo2sherpa: error: ...`; a failed validation gate exits 3; a
transient fault (the Hub or the store unreachable) exits 4: running it again may pass.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import (EXIT_CODES, PERMANENT, TRANSIENT, VERDICT, GateFailed, InputError, PermanentError,
                     TransientError)
from .benchmark import DEFAULT_LENGTHS as BENCHMARK_LENGTHS
from .gates import GATE_DEFAULTS, GATES
from .pipeline import STEP, STEPS, Step, make_plan
from .quantize import DEFAULT_INT8_RECIPE, INT8_RECIPES, REPORT as QUANTIZE_REPORT
from .records import Export, Plan, Record, Source, ValidationSummary, dump
from .runtimes import KINDS
from .targets import Target
from .variants import BASE, DEFAULT_VARIANTS, VARIANTS

log = logging.getLogger("nemo2sherpa")

Flag = tuple[str, dict[str, Any]]


LOG_PLAIN = "NEMO2SHERPA_LOG"  # =plain where the log that takes these lines prefixes each with its own time


class _Plain(logging.Formatter):
    """The message alone, its level named from WARNING up: for a log that has its own prefix (an Airflow task's)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record's message, with its level before it from WARNING up."""
        text = super().format(record)
        return f"{record.levelname}: {text}" if record.levelno >= logging.WARNING else text


def setup_logging() -> None:
    """INFO lines on stderr (stdout carries the manifest): with time and logger, or, where the log that takes them
    prefixes each line with its own time and level (an Airflow task: NEMO2SHERPA_LOG=plain), the message alone."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Plain("%(message)s") if os.environ.get(LOG_PLAIN) == "plain" else
                         logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def _floats(s: str) -> list[float]:
    return [float(x) for x in _csv(s)]


def _list_of(item: tuple[type, ...]) -> Callable[[str], list[Any]]:
    """How a comma-separated flag is read for a list field of these item types (floats, ints, else strings)."""
    if item == (float,):
        return _floats
    return (lambda s: [int(x) for x in _csv(s)]) if item == (int,) else _csv


def _source_json(a: argparse.Namespace) -> Source | None:
    return Source.load(a.source_json) if a.source_json else None


INT8_RECIPE_FLAG: Flag = ("--int8-recipe", {"choices": list(INT8_RECIPES), "default": DEFAULT_INT8_RECIPE,
                                            "help": "how int8 is made; " + "; ".join(f"{k}: {r.summary}"
                                                                                     for k, r in INT8_RECIPES.items())})
GATE_FLAGS: list[Flag] = [(g.flag, {"dest": g.param, "help": f"{g.description} Default {g.shown(g.default)}; none: "
                                                           f"{g.none_means}.".replace("%", "%%")}) for g in GATES]
VARIANTS_FLAG: Flag = ("--variants", {"default": ",".join(DEFAULT_VARIANTS),
                                      "help": "comma-separated; " + "; ".join(f"{n}: {v.summary}"
                                                                              for n, v in VARIANTS.items())})
EVAL_FLAGS: list[Flag] = [
    ("--eval-set", {"help": "the evaluation set: a JSON-lines manifest (audio_filepath, optional text) or a folder "
                            "of audio files with an optional texts.tsv, local or s3:// (credentials from the AWS_* "
                            "environment: AWS_ENDPOINT_URL for a store that is not AWS); default: the built-in clips"}),
    ("--eval-max-clips", {"type": int, "default": None, "help": "a larger set is sampled to this many (seed 0); "
                                                                 "default 32"})]
BUNDLE: Flag = ("--bundle", {"required": True})
RUNTIMES_FLAG: Flag = ("--runtimes", {"default": ",".join(KINDS), "help": "the runtime matrix's kinds, comma-separated; "
                                      + "; ".join(f"{k}: {x.toolchain}" for k, x in KINDS.items())})
DEFAULT_LENGTHS = ",".join(f"{x:g}" for x in BENCHMARK_LENGTHS)
LENGTHS: Flag = ("--lengths", {"default": DEFAULT_LENGTHS, "help": "benchmark clip lengths (s), comma-separated"})
REFERENCE: Flag = ("--reference", {"required": True})


@dataclass(frozen=True)
class Command:
    """A subcommand: its flags and what it runs (returns the manifest printed last)."""

    help: str
    flags: list[Flag]
    run: Callable[[argparse.Namespace], Any]
    positional: list[Flag] = field(default_factory=list)
    plain: bool = False  # print the result as is (a path for the shell), not as JSON


# The steps' arguments' flags where several steps share them: their help and defaults, said once.
SHARED_FLAGS: dict[str, dict[str, Any]] = {"variants": VARIANTS_FLAG[1], "runtimes": RUNTIMES_FLAG[1],
                                           "int8_recipe": INT8_RECIPE_FLAG[1], "lengths": LENGTHS[1],
                                           "eval_set": EVAL_FLAGS[0][1], "eval_max_clips": EVAL_FLAGS[1][1]}


def _bare(tp: Any) -> Any:
    """A field's type without its None (`Path | None` -> Path)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1 else tp


def _is_record(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Record)


def step_flags(inputs: type) -> list[Flag]:
    """A step's flags, one per field of its arguments (pipeline.Step.inputs): `--<field>`; a record read from a JSON
    file `--<field>-json`; a flag `--<field>` (`--no-<field>` where it defaults on); a list comma-separated; the gate
    limits as GATE_FLAGS. Required where the field has no default."""
    out: list[Flag] = []
    hints = typing.get_type_hints(inputs)
    for f in dataclasses.fields(inputs):
        tp, name = _bare(hints[f.name]), f.name.replace("_", "-")
        opts = {"default": None, **SHARED_FLAGS.get(f.name, {}), **f.metadata}
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.name == "gates":
            out += GATE_FLAGS
        elif _is_record(tp):
            out.append((f"--{name}-json", {**opts, "dest": f"{f.name}_json", "required": required}))
        elif tp is bool:
            out.append((f"--no-{name}", {"dest": f.name, "action": "store_false", "help": opts.get("help")})
                       if f.default else (f"--{name}", {"action": "store_true", "help": opts.get("help")}))
        else:
            out.append((f"--{name}", {**({"type": tp} if tp in (int, float, Path) else {}), **opts,
                                      "required": required}))
    return out


def step_args(inputs: type, a: argparse.Namespace) -> Any:
    """A step's arguments from its flags (step_flags): each given flag read as its field's type, the others at the
    field's default."""
    given: dict[str, Any] = {}
    hints = typing.get_type_hints(inputs)
    for f in dataclasses.fields(inputs):
        tp = _bare(hints[f.name])
        if f.name == "gates":
            given[f.name] = {g.param: getattr(a, g.param) for g in GATES if getattr(a, g.param) is not None}
        elif _is_record(tp):
            path = getattr(a, f"{f.name}_json")
            given[f.name] = tp.load(path) if path else None
        elif getattr(a, f.name) is not None:
            value = getattr(a, f.name)
            given[f.name] = (_list_of(typing.get_args(tp))(value) if typing.get_origin(tp) is list else value)
    return inputs(**{k: v for k, v in given.items() if v is not None})


def step_command(step: Step) -> Command:
    """The command that runs a step from flags: its arguments' flags, then the step's own call (pipeline.STEPS)."""
    return Command(step.what, step_flags(step.inputs), lambda a: step.run(step_args(step.inputs, a)))


def _upstream(a):
    from .source import upstream_revision
    return upstream_revision(a.source, a.revision)


def _quantize(a):
    from .quantize import quantize_bundle
    return quantize_bundle(Path(a.bundle), frugal=not a.stock_quantizer, recipe=a.int8_recipe,
                           reference=Path(a.reference) if a.reference else None)


def _make_variant(a):
    v = VARIANTS[a.variant]
    return v.maker().make(v, Path(a.bundle), Path(a.reference), **json.loads(a.options))


def _step(a):
    from .pipeline import run_step
    return run_step(a.step, Plan.load(a.plan), _source_json(a))


def _convert(a):
    return convert(a.src, a.out, variants=_csv(a.variants), revision=a.revision, lengths=a.lengths, gpu=a.gpu,
                   gates={k: getattr(a, k) for k in GATE_DEFAULTS if getattr(a, k) is not None},
                   int8_recipe=a.int8_recipe, eval_set=a.eval_set, eval_max_clips=a.eval_max_clips,
                   runtime_matrix=a.runtime_matrix, keep_work_on_failure=a.keep_work_on_failure,
                   local_attention=a.local_attention,
                   runtimes=_csv(a.runtimes), publish_to=_csv(a.publish_to or ""), hub_private=a.hub_private)


def publish_targets(urls: list[str], reference: Path, private: bool = False) -> dict[str, Target]:
    """convert's publish targets from their URLs (targets.KINDS): s3://<bucket>[/<prefix>] through the AWS_*
    environment, hf://<namespace> with HF_TOKEN; InputError naming a URL that is neither."""
    from .hubtarget import hub_api
    from .s3input import client
    from .targets import TargetOptions, open_targets

    return open_targets({url: url for url in urls}, {"s3": client, "hub": lambda: hub_api(os.environ.get("HF_TOKEN"))},
                        TargetOptions(private=private, reference=reference))


def _runtimes_install(a):
    """Every runtime of the chosen kinds installed into the venv cache (what a worker image runs once)."""
    from .runtimes import RUNTIMES, chosen, install
    from .venvs import default_cache

    kinds = chosen(_csv(a.runtimes))
    return {rt.name: install(rt, default_cache()).cmd[0] for rt in RUNTIMES if rt.kind in kinds}


def _venv(a):
    from . import venvs
    return str(venvs.ensure(a.name))


def _sherpa_decode(a):
    from .sherpa import decode_files
    return decode_files(Path(a.bundle), a.variant, [Path(w) for w in a.wavs], a.threads, a.method,
                        Path(a.hotwords) if a.hotwords else None, a.hotwords_score)


def _sherpa_check(a):
    from .sherpa import check_files
    return check_files(Path(a.bundle), a.variant, [Path(w) for w in a.wavs], a.threads, json.loads(a.decoy),
                       tuple(_csv(a.parts)))


def _hotwords_check(a):
    import tempfile

    from .errors import GateFailed
    from .hotwords import check_phrases, read_phrases, table, tokenizer_model
    with tempfile.TemporaryDirectory() as d:
        rows = check_phrases(Path(a.bundle), read_phrases(Path(a.phrases)),
                             tokenizer_model(Path(a.nemo), Path(d) / "tokenizer.model"))
    print(table(rows), file=sys.stderr)
    differ = [r["phrase"] for r in rows if not r["same"] or r["unknown"]]
    if a.strict and differ:
        raise GateFailed(f"{len(differ)} phrases would be boosted along another split than the model emits: "
                         f"{', '.join(differ)}; respell them as the model writes them, or leave them out")
    return rows


def _bench_sherpa(a):
    from .benchmark import sherpa_cpu
    return sherpa_cpu(Path(a.bundle), a.variant, _floats(a.lengths), a.runs, a.threads)


def _bench_gpu(a):
    from .benchmark import cuda_runs
    return cuda_runs(Path(a.bundle), Path(a.reference), _csv(a.variants), _floats(a.lengths), a.runs, a.threads)


RUNS: list[Flag] = [("--runs", {"type": int, "default": 5}), ("--threads", {"type": int, "default": 2})]
COMMANDS: dict[str, Command] = {
    **{step.command or step.name: step_command(step) for step in STEPS if step.command is not None},
    "upstream": Command("the commit a Hub model's revision points at now (no download)",
                        [("--source", {"required": True}), ("--revision", {})], _upstream),
    "quantize": Command("the int8 variant", [BUNDLE, ("--reference", {
        "help": "also write the report (recipe, rewrite check) to <reference>/quantize.json"}), INT8_RECIPE_FLAG,
        ("--stock-quantizer", {"action": "store_true",
                               "help": "onnxruntime's quantizer as shipped (one more fp32 copy in memory)"})],
        _quantize),
    "make-variant": Command("make one registered variant from fp32 (what the quantize step runs for each)",
                            [BUNDLE, REFERENCE, ("--options", {"default": "{}", "help": "JSON: the maker's options"})],
                            _make_variant, positional=[("variant", {"choices": [v for v in VARIANTS
                                                                                if VARIANTS[v].module]})]),
    "convert": Command("every step in its venv, no publish", [
        VARIANTS_FLAG, ("--revision", {}), LENGTHS, ("--gpu", {"action": "store_true"}),
        *GATE_FLAGS, INT8_RECIPE_FLAG, *EVAL_FLAGS, ("--local-attention", {
            "help": "export with local attention: on (128,128) or LEFT,RIGHT encoder frames each side; memory linear "
                    "in the recording's length, for long dictation (default off: the checkpoint's own attention)"}),
        ("--no-runtime-matrix", {
            "dest": "runtime_matrix", "action": "store_false", "help": "skip the compat step's runtime matrix"}),
        RUNTIMES_FLAG,
        ("--keep-work-on-failure", {"action": "store_true", "help": "keep the work folder (beside OUT) when a step "
                                                                      "fails, for its reports"}),
        ("--publish-to", {"help": "publish the validated bundle, comma-separated: s3://<bucket>[/<prefix>] (credentials "
                                  "from AWS_*, AWS_ENDPOINT_URL for a store that is not AWS), hf://<namespace> (the "
                                  "Hugging Face Hub, one repo a variant; token from HF_TOKEN, HF_ENDPOINT for another "
                                  "Hub)"}),
        ("--hub-private", {"action": "store_true", "help": "create the Hub repos private"})],
        _convert, positional=[("src", {}), ("out", {"type": Path})]),
    "step": Command("one pipeline step over a plan (what a DAG task runs)", [
        ("--plan", {"type": Path, "required": True}), ("--source-json", {"type": Path})], _step,
        positional=[("step", {"choices": list(STEP)})]),
    "venv": Command("create (if needed) and print a stage venv", [], _venv, positional=[("name", {})], plain=True),
    "runtimes-install": Command("install every runtime of the matrix (wheels, npm packages, toolchains, clients) into "
                                "the venv cache, as a worker image does once", [RUNTIMES_FLAG], _runtimes_install),
    "sherpa-decode": Command("sherpa-onnx on wav files (a child process of the runtime matrix)", [
        BUNDLE, ("--variant", {"default": BASE.name}), ("--threads", {"type": int, "default": 2}),
        ("--method", {"default": "greedy_search", "choices": ["greedy_search", "modified_beam_search"]}),
        ("--hotwords", {"help": "a hotwords file (one phrase per line, optional ' :score'): modified beam search "
                                "biased through the bundle's bpe.vocab"}),
        ("--hotwords-score", {"type": float, "default": 1.5})], _sherpa_decode,
        positional=[("wavs", {"nargs": "+"})]),
    "sherpa-check": Command("sherpa-onnx greedy, beam search and beam search with hotwords on wav files, one process "
                            "(a child process of validate)", [
        BUNDLE, ("--variant", {"default": BASE.name}), ("--threads", {"type": int, "default": 2}),
        ("--decoy", {"default": "[]", "help": "JSON list of hotword phrases nobody said"}),
        ("--parts", {"default": "greedy,beam", "help": "greedy, beam (beam search, and with --decoy hotwords)"})],
        _sherpa_check,
        positional=[("wavs", {"nargs": "+"})]),
    "hotwords-check": Command("a hotwords file against the bundle: each phrase split as sherpa-onnx splits it "
                              "(bpe.vocab) and as the checkpoint's tokenizer does; differences flagged", [
        BUNDLE, ("--nemo", {"required": True, "help": "the checkpoint the bundle was made from (its tokenizer)"}),
        ("--strict", {"action": "store_true", "help": "exit 3 when a phrase is flagged"})], _hotwords_check,
        positional=[("phrases", {"help": "hotwords file: one phrase per line, optional ' :score'"})]),
    "bench-sherpa": Command("sherpa-onnx CPU latency (a child process of benchmark)", [
        BUNDLE, ("--variant", {"required": True}), ("--lengths", {"required": True}), *RUNS], _bench_sherpa),
    "bench-gpu": Command("onnxruntime CUDA latency (in the onnx-gpu venv, from benchmark)", [
        BUNDLE, REFERENCE, ("--variants", {"required": True}), ("--lengths", {"required": True}), *RUNS], _bench_gpu),
}


def convert(src: str, out: Path, *, variants: list[str], revision: str | None = None, lengths: str = DEFAULT_LENGTHS,
            gpu: bool = False, gates: dict[str, Any] | None = None, int8_recipe: str | None = None,
            eval_set: str | None = None, eval_max_clips: int | None = None,
            runtime_matrix: bool = True, keep_work_on_failure: bool = False,
            runtimes: list[str] | None = None, publish_to: list[str] | None = None,
            hub_private: bool = False, local_attention: str | None = None) -> dict[str, Any]:
    """The command-line conversion: every pipeline step in the DAG's venv for it, then, with `publish_to`, publish to
    each target as the DAG does. Each step's usage goes to <work>/steps.json as it ends; the work folder is removed
    unless a step fails and `keep_work_on_failure`."""
    from .source import classify

    classify(src)  # refuses bad input before any venv is built
    out = Path(out).resolve()
    work = out.parent / f".{out.name}.work"
    if eval_set and not eval_set.startswith("s3://"):
        eval_set = str(Path(eval_set).expanduser().resolve())  # the steps run elsewhere
    plan = make_plan(work, src, revision=revision, variants=variants, gpu=gpu, lengths=_floats(lengths), gates=gates,
                     int8_recipe=int8_recipe, eval_set=eval_set, eval_max_clips=eval_max_clips,
                     runtime_matrix=runtime_matrix, runtimes=runtimes,
                     local_attention=local_attention)  # checks the choices
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not empty; give a new folder (nothing was written)")
    targets = publish_targets(publish_to or [], plan.reference, hub_private)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ok = False
    try:
        results, steps = _run_steps(plan, work)
        published = _publish(targets, plan, results, work.name)
        bundle = plan.bundle
        for report in (Export.FILE, QUANTIZE_REPORT):  # what the steps learned, beside the bundle
            if (plan.reference / report).exists():
                shutil.copy2(plan.reference / report, bundle / report)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.rmdir()
        os.replace(bundle, out)  # the bundle appears whole or not at all
        ok = True
    finally:
        if ok or not keep_work_on_failure:
            shutil.rmtree(work, ignore_errors=True)
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
    return {"out": str(out), "source": results["source"], "validation": results["validate"],
            "benchmark_p50_s": results["benchmark"], "steps": steps, "files": sizes,
            "reduced_variants": results.get("quantize", {}), "compat": results.get("compat"),
            "package": results.get("package"), "published": published}


def _publish(targets: dict[str, Target], plan: Plan, results: dict[str, Any], run_id: str) -> dict[str, Any]:
    """convert's publish: the validated bundle to each target (targets.publish_all, as the DAG's publish task), with
    its wall time and this process's peak RSS when publishing ended (it holds nothing else large)."""
    import resource

    from .targets import publish_all

    published = publish_all(targets, plan.bundle, Source.from_json(results["source"]), plan.variants, run_id,
                            ValidationSummary.from_json(results["validate"]), results["benchmark"])
    return {url: {**r.to_json(), "wall_s": r.wall_s,
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
            for url, r in published.items()}


def _run_steps(plan: Plan, work: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Each step of pipeline.STEPS as a child process in its venv; their manifests and wall time / peak RSS."""
    from . import venvs
    from .child import run_module_measured, step_environment

    plan_json, source_json = work / "plan.json", work / "source.json"
    plan_json.write_text(json.dumps(plan.to_json()))
    results: dict[str, Any] = {}
    steps: dict[str, dict[str, Any]] = {}
    for step in STEPS:
        args = ["step", step.name, "--plan", str(plan_json)] + (["--source-json", str(source_json)]
                                                                 if "source" in results else [])
        proc, usage = run_module_measured(args, python=venvs.ensure(step.venv) / "bin" / "python",
                                          env=step_environment(dict(os.environ), step.reads_inputs))
        steps[step.name] = usage.to_json()
        (work / "steps.json").write_text(json.dumps(steps, indent=1))
        if proc.returncode in EXIT_CODES.values():
            raise SystemExit(proc.returncode)  # the child printed its one-line error (permanent, verdict, transient)
        if proc.returncode != 0:
            raise SystemExit(f"nemo2sherpa: step {step.name} failed (exit {proc.returncode}); see the log above")
        log.info("step %-15s done in %7.1f s, peak RSS %6.2f GB (its processes together %.2f GB); other load on the "
                 "machine %.0f%%", step.name, usage.wall_s, usage.peak_rss_bytes / 1e9,
                 (usage.peak_tree_bytes or 0) / 1e9, 100 * usage.other_load)
        results[step.name] = json.loads(proc.stdout.strip().splitlines()[-1])
        if step.name == STEPS[0].name:  # the source manifest: every later step may read it
            source_json.write_text(json.dumps(results[step.name]))
    return results, steps


def parser() -> argparse.ArgumentParser:
    """The argument parser, built from COMMANDS."""
    ap = argparse.ArgumentParser(prog="nemo2sherpa", description="NeMo Parakeet-TDT -> sherpa-onnx, stage by stage")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, c in COMMANDS.items():
        p = sub.add_parser(name, help=c.help, description=c.help)
        for flag, opts in (*c.positional, *c.flags):
            p.add_argument(flag, **opts)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run one command; its manifest is the last line of stdout; errors exit by their class (errors.EXIT_CODES)."""
    a = parser().parse_args(argv)
    setup_logging()
    try:
        c = COMMANDS[a.cmd]
        out = c.run(a)
        print(out if c.plain else json.dumps(dump(out), default=str))
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
    except Exception as e:  # noqa: BLE001 - classified here, once: a network fault may pass, anything else repeats
        import traceback

        from .errors import describe, failure_kind

        traceback.print_exc()
        kind = failure_kind(e)
        print(f"nemo2sherpa: {'transient error (try again)' if kind == TRANSIENT else 'error'} in {a.cmd}"
              f"{' ' + a.step if getattr(a, 'step', None) else ''}: {describe(e)}", file=sys.stderr)
        return EXIT_CODES[kind]
