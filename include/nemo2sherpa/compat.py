"""Stage, compat (ONNX venv, after validate): which sherpa-onnx runtimes decode this bundle as validated.

Each variant has a layout (its encoder one self-contained file, or its weights in a `.weights` file beside it, as
every registry model over 2 GB ships fp32) and each layout its own range of sherpa-onnx releases (runtimes.RANGES,
measured on every release). The runtimes of runtimes.RUNTIMES that bound a variant's layout, and the newest of each
kind users ship, decode that variant on the evaluation clips up to MATRIX_MAX_S; each is compared token for token
(and timestamp for timestamp, to the 10 ms the runtimes print) with the newest sherpa-onnx Python wheel, whose
output validate gated (validation.json). A runtime inside the variant's range that decodes otherwise fails the stage
(GateFailed, naming runtime, variant and clip); one outside it is recorded with how it fails. A runtime killed as
for memory is the machine's limit (MACHINE_LIMIT), recorded with the machine's memory: no verdict on the bundle.
Runtimes run two at a time (at most one on a model with external weights: each holds it in memory), one thread each.
Writes compatibility.json beside the bundle and re-renders VALIDATION.md with the matrix.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from .errors import GateFailed
from .records import (MACHINE_LIMIT, CompatSummary, Compatibility, Example, Export, ExportClip, RuntimeOnVariant,
                      RuntimeRow, SherpaRun, Validation)
from .runtimes import KINDS, RUNTIMES, Graphs, Runtime, chosen, decode, install, ranges_of
from .variants import EXTERNAL_WEIGHTS, layout

log = logging.getLogger("nemo2sherpa.compat")

# The statuses a runtime inside the range may have: the same output on every clip; the same on every clip the
# model knows; differences only, on a set with no clip the model knows (nothing there to hold a runtime to).
PROVEN = ("agrees", "agrees where known")  # a runtime shown to decode the bundle as validated
AGREE = (*PROVEN, "unknown audio only")
# The matrix decodes the evaluation clips up to this long (at least the shortest clip). What tells runtimes apart
# is how each loads the files and follows the TDT durations, which any clip with speech shows; long clips would add
# minutes at 1.1B (each runtime loads the model anew and decodes 105 s of the built-in set at RTF ~0.25 in fp32)
# and, on audio a model does not know, only near-tie noise. Long audio is held on the reference runtime by validate.
MATRIX_MAX_S = 20.0
WORKERS = 2  # runtimes decoding at once, one thread each


def matrix_clips(clips: list[ExportClip]) -> list[int]:
    """The indices of the clips the matrix decodes: those up to MATRIX_MAX_S, else the shortest."""
    short = [i for i, c in enumerate(clips) if c.duration_s <= MATRIX_MAX_S]
    return short or [min(range(len(clips)), key=lambda i: clips[i].duration_s)]


def _compare(ref: dict[str, Any], got: dict[str, Any], clips: list[str], known: set[str]) -> dict[str, Any]:
    """A runtime's output against the reference's, clip by clip: the clips that differ, with an example. On audio
    the model does not know (not in `known`: validate.known_clips) runtimes part at near-ties of the logits
    (measured: sherpa-onnx 1.12.26 and 2.0.1 on a model trained on other sentences); a difference there is
    recorded, one on a clip the model knows is the runtime's."""
    if not got["ok"]:
        return {"status": MACHINE_LIMIT if got.get("killed") else "fails", "error": got["error"],
                "exit_code": got.get("exit_code")}
    differ = [i for i in range(len(clips)) if got["tokens"][i] != ref["tokens"][i] or len(got["timestamps"][i]) !=
              len(ref["timestamps"][i]) or any(abs(a - b) > 0.011 for a, b in zip(got["timestamps"][i],
                                                                                  ref["timestamps"][i]))]
    on_known = [i for i in differ if clips[i] in known]
    status = "differs" if on_known else "agrees" if not differ else "agrees where known" if known else \
        "unknown audio only"
    out: dict[str, Any] = {"status": status, "clips": len(clips), "differing": [clips[i] for i in differ],
                           "known_clips": len(known)}
    if differ:
        i = (on_known or differ)[0]
        out["example"] = Example(clip=clips[i], text=got["texts"][i], reference=ref["texts"][i])
    return out


def _interleaved(jobs: list[tuple[Runtime, str]], layouts: dict[str, str]) -> list[tuple[Runtime, str]]:
    """Jobs on a model with external weights (one at a time) alternated with the others, so the second worker has
    something to do while the first holds the big model."""
    big = [j for j in jobs if layouts[j[1]] == EXTERNAL_WEIGHTS.name]
    small = [j for j in jobs if layouts[j[1]] != EXTERNAL_WEIGHTS.name]
    out = []
    while big or small:
        out += [q.pop(0) for q in (big, small) if q]
    return out


def _reference(sherpa: SherpaRun, picked: list[int]) -> dict[str, Any]:
    """validate's sherpa-onnx output on the matrix's clips."""
    return {"texts": [sherpa.texts[i] for i in picked], "tokens": [sherpa.tokens[i] for i in picked],
            "timestamps": [sherpa.timestamps[i] for i in picked]}


def check_runtimes(bundle: Path, reference_dir: Path, variants: list[str], runtimes: tuple[Runtime, ...] = RUNTIMES,
                   cache: Path | None = None, report: bool = True, workers: int = WORKERS,
                   kinds: list[str] | None = None) -> Compatibility:
    """The runtime matrix over a validated bundle: compatibility.json (and VALIDATION.md re-rendered with it);
    GateFailed when a runtime inside a variant's range decodes it otherwise than the reference. `kinds`: the run's
    choice of runtime kinds (default every kind); those left out are named in the record."""
    import sherpa_onnx

    from .venvs import default_cache

    t0 = time.monotonic()
    kinds = chosen(kinds)
    runtimes = tuple(rt for rt in runtimes if rt.kind in kinds)
    left_out = [k for k in KINDS if k not in kinds]
    if left_out:
        log.warning("runtimes left out by this run's choice: %s", ", ".join(KINDS[k].label for k in left_out))
    bundle = Path(bundle)
    validated = Validation.read(bundle)
    every = Export.read(reference_dir).clips
    picked = matrix_clips(every)
    clips = [every[i].name for i in picked]
    wavs = [every[i].path for i in picked]
    known = set(validated.known_clips or []) & set(clips)
    feat_dim = int(validated.model.feat_dim)
    layouts = {v: layout(bundle, v).name for v in variants}
    log.info("runtime matrix on %d clips up to %g s (%s), variants %s", len(clips), MATRIX_MAX_S, ", ".join(clips),
             ", ".join(f"{v} ({layouts[v]})" for v in variants))
    jobs = _interleaved([(rt, v) for rt in runtimes for v in variants if rt.runs_on(layouts[v])], layouts)
    how = {rt: install(rt, Path(cache or default_cache())) for rt in dict.fromkeys(rt for rt, _ in jobs)}
    big = threading.Semaphore(1)  # one model with external weights in memory at a time

    def run(job: tuple[Runtime, str]) -> tuple[dict[str, Any], float]:
        rt, v = job
        with big if layouts[v] == EXTERNAL_WEIGHTS.name else nullcontext():
            s0 = time.monotonic()
            got = decode(rt, how[rt], Graphs.of(bundle, v), wavs, feat_dim, threads=1 if workers > 1 else 2)
            return got, time.monotonic() - s0

    with ThreadPoolExecutor(max(1, workers)) as pool:
        done = dict(zip(jobs, pool.map(run, jobs)))
    rows = [_row(rt, variants, layouts, done, validated, picked, clips, known) for rt in how]
    bad = [(r, v, x) for r in rows for v, x in r.variants.items()
           if x.in_range and x.status not in (*AGREE, MACHINE_LIMIT)]
    result = Compatibility(reference=f"sherpa-onnx (Python) {sherpa_onnx.__version__}", ranges=ranges_of(layouts),
                           clips=clips, clips_max_s=MATRIX_MAX_S, variants=variants, runtimes=rows, kinds=kinds,
                           left_out={k: f"{KINDS[k].label}: not chosen for this run" for k in left_out},
                           known_clips=sorted(known), passed=not bad, seconds=round(time.monotonic() - t0, 1))
    (bundle / Compatibility.FILE).write_text(json.dumps(result.to_json(), indent=2) + "\n")
    if report:
        from .report import render_markdown

        (bundle / "VALIDATION.md").write_text(render_markdown(validated, result))
    if bad:
        raise GateFailed("runtimes inside a variant's stated range decode it otherwise than the reference: " + "; ".join(
            f"{r.runtime} {v} ({x.layout}, {result.ranges[v].range}): {_said(x)}" for r, v, x in bad))
    return result


def _said(x: RuntimeOnVariant) -> Any:
    """What a runtime did wrong, as the error names it: its example, else its error."""
    return x.example.to_json() if x.example else x.error


def _row(rt: Runtime, variants: list[str], layouts: dict[str, str], done: dict, validated: Validation,
         picked: list[int], clips: list[str], known: set[str]) -> RuntimeRow:
    """One runtime's row of the matrix: per variant it ran on, its status, layout and whether the variant's range
    includes it; logged."""
    per: dict[str, RuntimeOnVariant] = {}
    total = 0.0
    for v in variants:
        if (rt, v) not in done:
            continue
        got, seconds = done[(rt, v)]
        ref = _reference(validated.variants[v].sherpa, picked)
        per[v] = RuntimeOnVariant(**_compare(ref, got, clips, known), layout=layouts[v],
                                  in_range=rt.in_range(layouts[v]), seconds=round(seconds, 1), native=got.get("native"))
        total = round(total + seconds, 1)
    statuses = {x.status for x in per.values()}
    status = next(s for s in ("fails", "differs", MACHINE_LIMIT, "unknown audio only", "agrees where known", "agrees")
                  if s in statuses)
    for v, x in per.items():
        say = log.warning if x.status == MACHINE_LIMIT else log.info
        say("%-56s %-5s %-18s %s (%s range, %.1f s)%s", rt.name, v, x.status, x.layout,
            "in" if x.in_range else "outside", x.seconds,
            f": {_said(x) or ''}" if x.example or x.error is not None else "")
    return RuntimeRow(runtime=rt.name, kind=rt.kind, version=rt.version, from_folder=rt.from_folder, note=rt.note,
                      variants=per, seconds=total, status=status)


def proven(result: Compatibility, variant: str) -> list[str]:
    """The runtimes the matrix showed to decode one variant as validated, inside its range."""
    return [r.runtime for r in result.runtimes
            if variant in r.variants and r.variants[variant].in_range and r.variants[variant].status in PROVEN]


def summary(result: Compatibility) -> CompatSummary:
    """The stage's small manifest (XCom): each variant's range and each runtime's status."""
    return CompatSummary(passed=result.passed, ranges={v: r.range for v, r in result.ranges.items()},
                         runtimes={r.runtime: r.status for r in result.runtimes}, seconds=result.seconds)
