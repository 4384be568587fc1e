"""Stage 6, benchmark (ONNX venv): latency by clip length, warm-up excluded.

CPU always: sherpa-onnx (what users ship, audio in, text out; in a child process whose peak RSS
is recorded) and onnxruntime (the library's greedy decoder over the same sessions, on NeMo
features of a real clip tiled to each length) per variant. GPU when asked: onnxruntime's CUDA
provider over that decoder, in a child process in the `onnx-gpu` venv (onnxruntime-gpu; one venv
cannot hold it beside the CPU onnxruntime), built on first use like the stage venvs. The run
asserts CUDA really ran; where it cannot (no GPU, CUDA libraries missing), the result says
`skipped` with the reason, onnxruntime's own words included. Never a silent fallback. Writes benchmark.json and, beside it,
benchmark.png (p50 latency vs clip length per engine and variant).
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
from .variants import BASE

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
    """(label, {length: stats}) for every engine and variant that ran."""
    for v, r in result.cpu.items():
        yield f"sherpa-onnx CPU {v}", r.by_length
    for v, r in result.ort_cpu.items():
        yield f"onnxruntime CPU {v}", r.by_length
        if r.encoder_by_length is not None:
            yield f"onnxruntime CPU {v}, encoder only", r.encoder_by_length
    if result.nemo_cpu:
        yield "NeMo transcribe CPU fp32 (baseline)", result.nemo_cpu.by_length
    for v, r in (result.gpu.variants or {}).items():
        if r.status == "ok":
            yield f"onnxruntime CUDA {v}", r.by_length


def plot(result: Benchmark, path: Path) -> None:
    """benchmark.png: p50 latency against clip length, one line per engine and variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    for label, by_len in _series(result):
        xs = sorted(float(k) for k in by_len)
        ax.plot(xs, [by_len[f"{x:g}"].p50_s * 1000 for x in xs], marker="o", label=label)
    ax.set_xlabel("clip length (s)")
    ax.set_ylabel("p50 latency (ms), warm")
    ax.set_title(f"nemo2sherpa benchmark ({result.threads} threads, {result.runs} runs per point)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)  # beside the plot, over no data
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def table(result: Benchmark) -> str:
    """The benchmark as text: one row per engine, variant and clip length (onnxruntime rows also give the
    encoder alone, `-enc`, and the tokens the greedy loop emitted; `disturbed`: timed runs during which other
    processes used over DISTURBED of the machine; `-` where calls are too short to tell)."""
    rows = ["engine        variant  length   p50 s     p95 s     RTF      cold s   disturbed  tokens"]

    def add(name: str, v: str, r: Engine) -> None:
        for timings, label in ((r.by_length, name), (r.encoder_by_length, f"{name}-enc")):
            for L, s in (timings or {}).items():
                tokens = (r.tokens_by_length or {}).get(L, "") if label == name else ""
                busy = "-" if s.disturbed_runs is None else f"{s.disturbed_runs}/{s.runs}"
                rows.append(f"{label:<13} {v:<8} {L:>5}s  {s.p50_s:<9.4f} {s.p95_s:<9.4f} {s.rtf_p50:<8.4f} "
                            f"{s.cold_s:<8.4f} {busy:<10} {tokens}".rstrip())

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
    return "\n".join(rows)
