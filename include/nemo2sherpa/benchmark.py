"""Stage 6, benchmark (ONNX venv): latency by clip length, warm-up excluded.

CPU always: sherpa-onnx (what users ship, audio in, text out; in a child process whose peak RSS
is recorded) and onnxruntime (the library's greedy decoder over the same sessions, on NeMo
features of a real clip tiled to each length) per variant. GPU when asked: onnxruntime's CUDA
provider over that decoder, in a child process in the `onnx-gpu` venv (onnxruntime-gpu; one venv
cannot hold it beside the CPU onnxruntime), built on first use like the stage venvs. The run
asserts CUDA really ran; where it cannot (no GPU, CUDA libraries missing), the result says
`skipped` with the reason, onnxruntime's own words included. Never a silent fallback. Writes benchmark.json and, beside it,
benchmark.png (p50 latency in ms on a log axis vs clip length per engine and variant, beside each one's speed-up
over NeMo's transcribe()).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from .child import own_peak_rss, run_module
from .records import Benchmark, Engine, Export, Gpu, Timing, given
from .variants import BASE, VARIANTS

log = logging.getLogger("nemo2sherpa.benchmark")

# The clip lengths a run times unless it says otherwise: a dictated sentence and a dictated paragraph. Each length
# costs every engine and variant seven calls (a 30 s clip of the 1.1B fp32 in sherpa-onnx: ~30 s of the step).
DEFAULT_LENGTHS = (2.0, 10.0)
MAX_LENGTH_S = 120.0  # longer clips time memory more than latency (a 1.1B fp32 encoder on 2 minutes: GBs)
GPU_VENV = "onnx-gpu"  # requirements/onnx-gpu.txt: onnx.txt with onnxruntime-gpu in place of onnxruntime


# A timed call during which other processes kept more than this share of the machine's CPUs busy is disturbed:
# on 2 cores, one other busy thread triples a 2-thread latency here. Reported, and left out where we compare.
DISTURBED = 0.10


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds every process on the machine has been busy since boot, CPU seconds of this process), from
    /proc/stat and times(2); two readings around a call tell how much of the machine others used meanwhile."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f.readline().split()[1:9])
    t = os.times()
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK"), t.user + t.system


# /proc/stat counts in clock ticks (10 ms): a call shorter than this many ticks of the whole machine cannot be told
# apart from one tick of somebody else's work (40 ticks: one tick is 2.5% of it).
MEASURABLE_TICKS = 40


def other_load(before: tuple[float, float], after: tuple[float, float], wall_s: float) -> float | None:
    """Share of the machine's CPUs (0..1) that other processes used between two cpu_seconds() readings; None for
    a call too short for /proc/stat's clock ticks to say."""
    capacity = wall_s * (os.cpu_count() or 1)
    if capacity * os.sysconf("SC_CLK_TCK") < MEASURABLE_TICKS:
        return None
    others = (after[0] - before[0]) - (after[1] - before[1])
    return round(max(0.0, others) / capacity, 3)


def time_calls(call: Callable[[Any], Any], runs: int, seconds: float,
               prepare: Callable[[], Any] = lambda: None) -> Timing:
    """Time `call(prepare())` runs + 1 times (only `call` is timed). The first is the warm-up: excluded from
    the percentiles, reported as the cold call. `seconds` is the audio length, for the real-time factor."""
    times, load = [], []
    for _ in range(runs + 1):
        arg = prepare()
        c0, t0 = cpu_seconds(), time.perf_counter()
        call(arg)
        times.append(time.perf_counter() - t0)
        load.append(other_load(c0, cpu_seconds(), times[-1]))
    measured = [x for x in load[1:] if x is not None]
    disturbed = sum(x > DISTURBED for x in measured)
    if disturbed:
        log.warning("%d of %d timed runs were disturbed by other load (other processes used up to %.0f%% of the "
                    "machine): these figures are slower than this machine can do", disturbed, runs, 100 * max(measured))
    import numpy as np

    warm = np.asarray(times[1:])
    p50 = float(np.percentile(warm, 50))
    return Timing(p50_s=round(p50, 5), p95_s=round(float(np.percentile(warm, 95)), 5), rtf_p50=round(p50 / seconds, 5),
                  runs=len(warm), cold_s=round(times[0], 5),
                  other_load_max=max(measured) if measured else None, disturbed_runs=disturbed if measured else None)


def sherpa_cpu(bundle: Path, variant: str, lengths: list[float], runs: int, threads: int) -> Engine:
    """In-process (call it from a child process): sherpa-onnx CPU latency per clip length."""
    from .audio import fixed_length, load_clips, read_wav
    from .sherpa import recognizer

    speech, rate = read_wav(load_clips()[0].path)
    t0 = time.monotonic()
    rec = recognizer(bundle, variant, threads)
    load_s = round(time.monotonic() - t0, 4)
    by_length = {}
    for secs in lengths:
        audio = fixed_length(speech, rate, secs)

        def decode(st, audio=audio):
            st.accept_waveform(rate, audio)
            rec.decode_stream(st)

        by_length[f"{secs:g}"] = time_calls(decode, runs, secs, prepare=rec.create_stream)
    return Engine(engine="sherpa-onnx", provider="cpu", variant=variant, threads=threads, load_s=load_s,
                  by_length=by_length, peak_rss_bytes=own_peak_rss())  # not wait4's: the parent may hold a model


def _tile_frames(f, frames: int):
    """Features [1, C, T] tiled along time to exactly `frames` frames."""
    import numpy as np

    reps = -(-frames // f.shape[2])
    return np.ascontiguousarray(np.tile(f, (1, 1, reps))[:, :, :frames])


def ort_engine(bundle: Path, reference_dir: Path, variant: str, lengths: list[float], runs: int,
               spec: dict[str, Any], provider: str = "cpu", threads: int = 2) -> Engine:
    """onnxruntime over the greedy decoder: CPU, or CUDA (asserting CUDA is the provider that ran)."""
    import numpy as np
    import onnxruntime as ort

    from .decode import GreedyDecoder, Sessions
    from .reference import clip_features
    from .modelspec import ModelSpec

    if provider == "cuda":
        avail = ort.get_available_providers()
        if "CUDAExecutionProvider" not in avail:
            return Engine(status="skipped", reason=f"onnxruntime has no CUDAExecutionProvider (available: {avail}); "
                                                   f"install onnxruntime-gpu on a machine with an NVIDIA GPU")
        s = Sessions.load(bundle, variant, providers=["CUDAExecutionProvider", "CPUExecutionProvider"], threads=threads)
        if s.providers[0] != "CUDAExecutionProvider":
            return Engine(status="skipped", reason=f"CUDA provider did not load; session providers {s.providers}")
    else:
        s = Sessions.load(bundle, variant, threads=threads)
    model = ModelSpec.from_dict(spec)
    dec = GreedyDecoder.for_spec(s, model)
    # Beside the whole decode, the encoder alone: its cost does not depend on the weights' values, so on a
    # random-weight checkpoint it is the trained model's, and a floor under its latency. `tokens` shows how
    # busy the greedy loop was (a random joint emits on most frames; a trained one on a few).
    whole: dict[str, Timing] = {}
    encoder: dict[str, Timing] = {}
    emitted: dict[str, int] = {}
    clip = clip_features(reference_dir)  # NeMo features of a real clip
    for secs in lengths:
        feats = _tile_frames(clip, int(secs * 100))
        frames = np.array([feats.shape[2]], dtype=np.int64)
        tokens: list[int] = []
        L = f"{secs:g}"
        whole[L] = time_calls(
            lambda _: tokens.append(len(dec.decode_features(feats, model.pred_rnn_layers, model.pred_hidden))), runs,
            secs)
        encoder[L] = time_calls(lambda _: dec.encode(feats, frames), runs, secs)
        emitted[L] = tokens[-1]
    return Engine(status="ok", engine="onnxruntime", provider=s.providers[0], variant=variant, threads=threads,
                  by_length=whole, encoder_by_length=encoder, tokens_by_length=emitted)


def cuda_runs(bundle: Path, reference_dir: Path, variants: list[str], lengths: list[float], runs: int,
              threads: int) -> Gpu:
    """In-process, in the onnx-gpu venv's child: the CUDA runs per variant, with the runtime and GPU they saw."""
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):  # CUDA and cuDNN from the venv's nvidia-* wheels: only the driver is the host's
        ort.preload_dlls(directory="")
    spec = Export.read(reference_dir).spec
    return Gpu(runtime=f"onnxruntime {ort.__version__} (device build: {ort.get_device()})", device=_gpu_name(),
               variants={v: ort_engine(bundle, reference_dir, v, lengths, runs, spec, "cuda", threads) for v in variants})


def _gpu_name() -> str | None:
    """nvidia-smi's name, driver and memory of the first GPU, or None where there is none."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _cuda_complaint(line: str) -> str | None:
    """onnxruntime's message in a stderr line (colours removed) saying why the CUDA provider did not load."""
    if "onnxruntime" not in line or not ("Failed to load library" in line or "Failed to create CUDA" in line):
        return None
    return line.split("FAIL : ", 1)[1].strip() if "FAIL : " in line else line.rsplit("] ", 1)[-1].strip()


def gpu_benchmark(bundle: Path, reference_dir: Path, variants: list[str], lengths: list[float], runs: int,
                  threads: int) -> Gpu:
    """cuda_runs in a child process in the onnx-gpu venv; onnxruntime's complaints about CUDA join the reasons."""
    from . import venvs

    python = venvs.ensure(GPU_VENV) / "bin" / "python"
    proc = run_module(["bench-gpu", "--bundle", str(bundle), "--reference", str(reference_dir), "--variants",
                       ",".join(variants), "--lengths", ",".join(f"{x:g}" for x in lengths), "--runs", str(runs),
                       "--threads", str(threads)], python=python, capture_output=True)
    said: dict[str, None] = {}  # each complaint once: onnxruntime repeats them for every session
    for line in (_ANSI.sub("", x).rstrip() for x in proc.stderr.splitlines()):
        complaint = _cuda_complaint(line)
        if complaint:
            said[complaint] = None
        elif line:
            log.info("[%s] %s", GPU_VENV, line)
    for msg in said:
        log.warning("[%s] onnxruntime: %s", GPU_VENV, msg)
    if proc.returncode != 0:
        raise RuntimeError(f"the GPU benchmark ({GPU_VENV} venv) died (exit {proc.returncode}); its log is above")
    result = Gpu.from_json(json.loads(proc.stdout.strip().splitlines()[-1]), "bench-gpu")
    hint = ("; no NVIDIA driver on this machine (libcuda.so.1): run benchmark on a GPU worker (queue gpu)"
            if any("libcuda.so" in m for m in said) else "")
    result = replace(result, variants={v: replace(r, reason=r.reason + hint + "; onnxruntime: " + " / ".join(said))
                                       if r.status == "skipped" and said else r
                                       for v, r in (result.variants or {}).items()})
    log.info("GPU: %s on %s", result.runtime, given(result.device) or "no NVIDIA GPU (nvidia-smi found none)")
    return result


def run_benchmark(bundle: Path, reference_dir: Path, variants: list[str], lengths: list[float], runs: int = 5,
                  threads: int = 2, gpu: bool = False, out_path: Path | None = None) -> Benchmark:
    """Every engine on every variant and clip length; benchmark.json and benchmark.png at `out_path`."""
    bundle = Path(bundle)
    exported = Export.read(reference_dir)
    cpu, ort_cpu = {}, {}
    for v in variants:
        proc = run_module(["bench-sherpa", "--bundle", str(bundle), "--variant", v, "--runs", str(runs), "--threads",
                           str(threads), "--lengths", ",".join(f"{x:g}" for x in lengths)], stdout=subprocess.PIPE)
        if proc.returncode != 0:
            raise RuntimeError(f"sherpa-onnx benchmark of {v} died (exit {proc.returncode}); see the log above")
        cpu[v] = Engine.from_json(json.loads(proc.stdout.strip().splitlines()[-1]), "bench-sherpa")  # its own RSS
        ort_cpu[v] = ort_engine(bundle, reference_dir, v, lengths, runs, exported.spec, "cpu", threads)
    result = Benchmark(
        clip_lengths_s=lengths, runs=runs, threads=threads, cpu=cpu, ort_cpu=ort_cpu,
        gpu=gpu_benchmark(bundle, reference_dir, variants, lengths, runs, threads) if gpu
        else Gpu(status="skipped", reason="GPU benchmark not requested (gpu_benchmark=false)"),
        # timed at export, where NeMo was loaded: the path users would take without a conversion
        nemo_cpu=exported.nemo_baseline)
    for line in table(result).splitlines():
        log.info("%s", line)
    if out_path:
        Path(out_path).write_text(json.dumps(result.to_json(), indent=2))
        plot(result, Path(out_path).with_suffix(".png"))
    return result


def p50s(result: Benchmark) -> dict[str, dict[str, float]]:
    """The benchmark step's small manifest (XCom): sherpa-onnx CPU p50 per variant and clip length."""
    return {v: {L: s.p50_s for L, s in (x.by_length or {}).items()} for v, x in result.cpu.items()}


def _series(result: Benchmark):
    """(label, engine, variant, {length: stats}) for every engine and variant that ran; engine is one of _COLOURS'
    keys (it picks the colour, the variant picks the marker)."""
    for v, r in result.cpu.items():
        yield f"sherpa-onnx CPU {v}", "sherpa-onnx", v, r.by_length
    for v, r in result.ort_cpu.items():
        yield f"onnxruntime CPU {v}", "onnxruntime", v, r.by_length
        if r.encoder_by_length is not None:
            yield f"onnxruntime CPU {v}, encoder only", "onnxruntime-enc", v, r.encoder_by_length
    if result.nemo_cpu:
        yield "NeMo transcribe CPU fp32 (baseline)", "nemo", result.nemo_cpu.variant or BASE.name, \
            result.nemo_cpu.by_length
    for v, r in (result.gpu.variants or {}).items():
        if r.status == "ok":
            yield f"onnxruntime CUDA {v}", "cuda", v, r.by_length


# One colour per engine, one marker per variant, dashed for the encoder alone: a reader finds "int8" or
# "sherpa-onnx" across both panels without matching ten arbitrary colours.
_COLOURS = {"sherpa-onnx": "tab:blue", "onnxruntime": "tab:orange", "onnxruntime-enc": "tab:orange",
            "nemo": "black", "cuda": "tab:green"}
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h")  # by the variant's place in the registry


def _style(engine: str, variant: str) -> dict[str, Any]:
    names = list(VARIANTS)
    marker = _MARKERS[(names.index(variant) if variant in names else len(names)) % len(_MARKERS)]
    return {"color": _COLOURS[engine], "marker": marker, "linestyle": "--" if engine == "onnxruntime-enc" else "-",
            "linewidth": 2.2 if engine == "nemo" else 1.5, "markersize": 6}


def _points(by_len: dict[str, Timing] | None) -> list[tuple[float, float]]:
    """(clip length s, p50 ms) sorted by length; a p50 of 0 (under the record's 10 µs rounding) is left out: it
    has no place on a log axis and nothing can be divided by it."""
    return sorted((float(L), s.p50_s * 1000) for L, s in (by_len or {}).items() if s.p50_s > 0)


def speedups(result: Benchmark) -> dict[str, list[tuple[float, float]]]:
    """Per non-NeMo series: (clip length s, NeMo's p50 / its p50) at each length NeMo was timed at too; {} where
    the record has no NeMo baseline."""
    nemo = dict(_points(result.nemo_cpu.by_length)) if result.nemo_cpu else {}
    out = {}
    for label, engine, _v, by_len in _series(result):
        if engine != "nemo" and nemo:
            pts = [(x, nemo[x] / ms) for x, ms in _points(by_len) if x in nemo]
            if pts:
                out[label] = pts
    return out


def _nemo_differs(result: Benchmark) -> str:
    """' (NeMo: 3 runs)' where the NeMo baseline (timed at export) ran another number of timed runs or threads."""
    nemo = result.nemo_cpu
    runs = {s.runs for s in (nemo.by_length or {}).values()} if nemo else set()
    other = ([f"{'/'.join(map(str, sorted(runs)))} runs"] if runs and runs != {result.runs} else []) + (
        [f"{nemo.threads} threads"] if nemo and nemo.threads not in (None, result.threads) else [])
    return f" (NeMo: {', '.join(other)})" if other else ""


def _log_ticks(ax, unit: str) -> None:
    """A log y axis labelled in plain numbers (5, 20, 1000: not 10^3), at 1-2-5 steps while it spans under two
    decades and at the decades alone beyond that."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = ax.get_ylim()
    label = FuncFormatter(lambda y, _: f"{y:g}{unit}")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0,)))
    ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    ax.yaxis.set_major_formatter(label)
    ax.yaxis.set_minor_formatter(label if hi / lo < 100 else NullFormatter())


def figure(result: Benchmark):
    """benchmark.png's figure: left, p50 latency (ms, log axis) against clip length, one line per engine and
    variant; right, how many times faster than NeMo's transcribe() each one is at the lengths NeMo was timed at
    (or, where the record has no NeMo baseline, a note saying so). The legend sits below both panels."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 6.2), dpi=100, layout="constrained")
    lat, fast = fig.subplots(1, 2)
    lengths = sorted({x for *_, by_len in _series(result) for x, _ in _points(by_len)})
    for label, engine, v, by_len in _series(result):
        pts = _points(by_len)
        if pts:
            lat.plot(*zip(*pts), label=label, **_style(engine, v))
    lat.set_yscale("log")
    lat.set_ylabel("p50 latency per call (ms, log scale); lower is faster")
    lat.set_title("Latency")

    gains = speedups(result)
    styles = {label: _style(engine, v) for label, engine, v, _ in _series(result)}
    if gains:
        for label, pts in gains.items():
            fast.plot(*zip(*pts), label=label, **styles[label])  # the legend is the left panel's
        fast.axhline(1.0, color="black", linewidth=2.2, label="_nolegend_")
        fast.annotate("NeMo (1x)", (1.0, 1.0), xycoords=("axes fraction", "data"), xytext=(-4, 4),
                      textcoords="offset points", ha="right", va="bottom", fontsize=8)
        fast.set_yscale("log")
        top = max(y for pts in gains.values() for _, y in pts)
        bottom = min(y for pts in gains.values() for _, y in pts)
        fast.set_ylim(min(bottom, 1.0) / 1.5, max(top, 1.0) * 1.5)  # 1x, NeMo's own line, always in view
        fast.set_ylabel("times faster than NeMo: NeMo's p50 / this p50 (log scale)")
        fast.set_title("Speed-up vs NeMo transcribe() (same clip length)")
        _log_ticks(fast, "x")
    else:
        fast.set_axis_off()
        fast.set_title("Speed-up vs NeMo transcribe()")
        nemo = _points(result.nemo_cpu.by_length) if result.nemo_cpu else []
        why = (f"NeMo's transcribe() was timed at {', '.join(f'{x:g} s' for x, _ in nemo)} only,\nwhere no other "
               "engine was timed" if nemo else "No NeMo baseline in this record\n(NeMo's transcribe() is timed "
               "during export, when asked for)")
        fast.text(0.5, 0.5, f"{why}: no speed-up to show.\nThe left panel compares the engines and variants with "
                  "each other.", transform=fast.transAxes, ha="center", va="center", fontsize=10)
    _log_ticks(lat, "")
    shared = sorted({x for pts in gains.values() for x, _ in pts})  # the lengths NeMo was timed at too
    for ax, xs in ((lat, lengths), (fast, shared)):
        if ax.axison:
            ax.set_xlabel("clip length (s)")
            ax.set_xticks(xs, [f"{x:g}" for x in xs])
            if len(xs) == 1:  # one point a series: give it room
                ax.set_xlim(xs[0] - 1, xs[0] + 1)
            ax.grid(True, which="major", alpha=0.35)
            ax.grid(True, which="minor", alpha=0.12)
    handles, labels = lat.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(4, max(1, len(labels))), fontsize=8.5,
               frameon=False)
    fig.suptitle(f"nemo2sherpa benchmark: {result.threads} threads, {result.runs} timed runs per point after one "
                 f"warm-up{_nemo_differs(result)}", fontsize=12)
    return fig


def plot(result: Benchmark, path: Path) -> None:
    """benchmark.png: figure(result), rendered by Agg; no software or time stamp in the file, so the same record
    always gives the same bytes."""
    figure(result).savefig(path, format="png", metadata={"Software": None})


def _ms(seconds: float) -> str:
    """Seconds as milliseconds, to the 0.1 ms the table always showed."""
    return f"{seconds * 1000:.1f}"


def table(result: Benchmark) -> str:
    """The benchmark as text, every time in milliseconds: one row per engine, variant and clip length (onnxruntime
    rows also give the encoder alone, `-enc`, and the tokens the greedy loop emitted), then the notes that say
    what the columns mean, sherpa-onnx's peak RSS and load time, and the GPU's lines."""
    rows = [f"{'engine':<13} {'variant':<8} {'length':>6}  {'p50 ms':>9} {'p95 ms':>9}  {'RTF':<8} {'cold ms':>9}  "
            f"{'disturbed':<10} tokens"]
    has = {"enc": False, "tokens": False}

    def add(name: str, v: str, r: Engine) -> None:
        for timings, label in ((r.by_length, name), (r.encoder_by_length, f"{name}-enc")):
            for L, s in (timings or {}).items():
                tokens = (r.tokens_by_length or {}).get(L, "") if label == name else ""
                has["enc"] |= label != name
                has["tokens"] |= tokens != ""
                busy = "-" if s.disturbed_runs is None else f"{s.disturbed_runs}/{s.runs}"
                rows.append(f"{label:<13} {v:<8} {L + 's':>6}  {_ms(s.p50_s):>9} {_ms(s.p95_s):>9}  "
                            f"{s.rtf_p50:<8.4f} {_ms(s.cold_s):>9}  {busy:<10} {tokens}".rstrip())

    groups = [("sherpa-cpu", result.cpu), ("ort-cpu", result.ort_cpu)]
    if result.nemo_cpu:
        groups.append(("nemo-cpu", {result.nemo_cpu.variant or BASE.name: result.nemo_cpu}))
    for name, by_variant in groups:
        for v, r in by_variant.items():
            add(name, v, r)
    for v, r in result.cpu.items():
        if r.peak_rss_bytes is not None:
            rows.append(f"sherpa-onnx {v}: peak RSS {r.peak_rss_bytes / 1e6:.0f} MB, load {r.load_s:.2f} s")
    gpu = result.gpu
    if gpu.status == "skipped":
        rows.append(f"gpu: skipped ({gpu.reason})")
    else:
        rows.append(f"gpu: {gpu.runtime} on {given(gpu.device) or 'no NVIDIA GPU'}")
        for v, r in (gpu.variants or {}).items():
            if r.status == "ok":
                add("ort-cuda", v, r)
            else:
                rows.append(f"gpu {v}: skipped ({r.reason})")
    # What the columns mean, under the table: a reader of the task log or the report page has no other key.
    rows += [f"ms: p50/p95 of {result.runs} warm calls after one warm-up call{_nemo_differs(result)}, "
             f"{result.threads} threads; cold ms: that first call; RTF: p50 / clip length (below 1: faster than "
             "real time)",
             *(["-enc: onnxruntime's encoder alone, no decoding (a floor under the whole call's latency)"
                + ("; tokens: what the greedy loop emitted" if has["tokens"] else "")] if has["enc"] else []),
             f"disturbed: timed runs during which other processes used more than {DISTURBED:.0%} of the machine's "
             "CPUs, so those figures may be slower than this machine can do; '-': calls too short to tell"]
    return "\n".join(rows)
