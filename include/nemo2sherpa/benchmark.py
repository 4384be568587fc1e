"""Stage 6, benchmark (ONNX venv): latency by clip length, warm-up excluded.

CPU always, through sherpa-onnx (what users ship) per variant, in a child process. GPU when
asked: onnxruntime's CUDA provider over the same greedy decoder as validation, and the run
asserts CUDA really ran; where it cannot, the result says `skipped` with the reason. Never a
silent fallback.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from .child import run_module

log = logging.getLogger("nemo2sherpa.benchmark")


def _stats(times: list[float], seconds: float) -> dict[str, float]:
    import numpy as np

    a = np.asarray(times)
    return {"p50_s": round(float(np.percentile(a, 50)), 5), "p95_s": round(float(np.percentile(a, 95)), 5),
            "rtf_p50": round(float(np.percentile(a, 50)) / seconds, 5), "runs": len(times)}


def sherpa_cpu(bundle: Path, variant: str, lengths: list[float], runs: int, threads: int) -> dict[str, Any]:
    """In-process (call it from a child process): sherpa-onnx CPU latency per clip length."""
    from .audio import fixed_length, load_clips, read_wav
    from .sherpa import recognizer

    speech, rate = read_wav(load_clips()[0].path)
    t0 = time.monotonic()
    rec = recognizer(bundle, variant, threads)
    out: dict[str, Any] = {"engine": "sherpa-onnx", "provider": "cpu", "variant": variant, "threads": threads,
                           "load_s": round(time.monotonic() - t0, 4), "by_length": {}}
    for secs in lengths:
        audio = fixed_length(speech, rate, secs)
        times = []
        for i in range(runs + 1):
            st = rec.create_stream()
            t0 = time.perf_counter()
            st.accept_waveform(rate, audio)
            rec.decode_stream(st)
            dt = time.perf_counter() - t0
            if i == 0:
                cold = dt  # warm-up: excluded from the percentiles, reported as the cold call
            else:
                times.append(dt)
        out["by_length"][f"{secs:g}"] = {**_stats(times, secs), "cold_s": round(cold, 5)}
    return out


def ort_cuda(bundle: Path, variant: str, lengths: list[float], runs: int, spec: dict[str, Any]) -> dict[str, Any]:
    """onnxruntime CUDA EP over the greedy decoder, on random NeMo-shaped features."""
    import numpy as np
    import onnxruntime as ort

    from .decode import GreedyDecoder, Sessions

    avail = ort.get_available_providers()
    if "CUDAExecutionProvider" not in avail:
        return {"status": "skipped", "reason": f"onnxruntime has no CUDAExecutionProvider (available: {avail}); "
                                               f"install onnxruntime-gpu on a machine with an NVIDIA GPU"}
    s = Sessions.load(bundle, variant, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    if s.providers[0] != "CUDAExecutionProvider":
        return {"status": "skipped", "reason": f"CUDA provider did not load; session providers {s.providers}"}
    dec = GreedyDecoder(s, spec["vocab_size"], spec["durations"])
    out: dict[str, Any] = {"status": "ok", "engine": "onnxruntime", "provider": s.providers[0], "variant": variant,
                           "by_length": {}}
    rng = np.random.default_rng(0)
    for secs in lengths:
        feats = rng.standard_normal((1, spec["feat_dim"], int(secs * 100)), dtype=np.float32)
        times = []
        for i in range(runs + 1):
            t0 = time.perf_counter()
            dec.decode_features(feats, spec["pred_rnn_layers"], spec["pred_hidden"])
            dt = time.perf_counter() - t0
            if i:
                times.append(dt)
            else:
                cold = dt
        out["by_length"][f"{secs:g}"] = {**_stats(times, secs), "cold_s": round(cold, 5)}
    return out


def run_benchmark(bundle: Path, reference_dir: Path, variants: list[str], lengths: list[float], runs: int = 5,
                  threads: int = 2, gpu: bool = False, out_path: Path | None = None) -> dict[str, Any]:
    bundle = Path(bundle)
    spec = json.loads((Path(reference_dir) / "export.json").read_text())["spec"]
    result: dict[str, Any] = {"clip_lengths_s": lengths, "runs": runs, "threads": threads, "cpu": {}, "gpu": {}}
    for v in variants:
        proc = run_module(["bench-sherpa", "--bundle", str(bundle), "--variant", v, "--runs", str(runs),
                           "--threads", str(threads), "--lengths", ",".join(f"{x:g}" for x in lengths)],
                          capture_output=True)
        if proc.returncode != 0:
            raise RuntimeError(f"sherpa-onnx benchmark of {v} died (exit {proc.returncode}): {proc.stderr[-800:]}")
        result["cpu"][v] = json.loads(proc.stdout.strip().splitlines()[-1])
    if gpu:
        for v in variants:
            result["gpu"][v] = ort_cuda(bundle, v, lengths, runs, spec)
    else:
        result["gpu"] = {"status": "skipped", "reason": "GPU benchmark not requested (gpu_benchmark=false)"}
    for line in table(result).splitlines():
        log.info("%s", line)
    if out_path:
        Path(out_path).write_text(json.dumps(result, indent=2))
    return result


def table(result: dict[str, Any]) -> str:
    rows = ["engine        variant  length   p50 s     p95 s     RTF      cold s"]
    for v, r in result["cpu"].items():
        for L, s in r["by_length"].items():
            rows.append(f"sherpa-cpu    {v:<8} {L:>5}s  {s['p50_s']:<9.4f} {s['p95_s']:<9.4f} {s['rtf_p50']:<8.4f} {s['cold_s']:.4f}")
    gpu = result["gpu"]
    if gpu.get("status") == "skipped":
        rows.append(f"gpu: skipped ({gpu['reason']})")
    else:
        for v, r in gpu.items():
            if r.get("status") != "ok":
                rows.append(f"gpu {v}: skipped ({r.get('reason')})")
                continue
            for L, s in r["by_length"].items():
                rows.append(f"ort-cuda      {v:<8} {L:>5}s  {s['p50_s']:<9.4f} {s['p95_s']:<9.4f} {s['rtf_p50']:<8.4f} {s['cold_s']:.4f}")
    return "\n".join(rows)
