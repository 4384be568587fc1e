"""The measuring half of `make bench-int8` (benchmarks/int8_recipes.py runs it in the onnx venv).

    int8_timing.py --bundle fp32=DIR:fp32 --bundle sherpa-onnx=DIR:int8 ... --reference REF --out JSON

For each recipe (a bundle folder and the variant in it): the encoder's relative error against PyTorch on the
evaluation clips' features; sizes; an onnxruntime profile of the encoder on a 10 s input (time by op type, and
the multiply-accumulates of every matrix op, from the profile's shapes); then latency, interleaved: in every
round each recipe runs once per clip length, in an order that rotates, so that drift in the machine's speed
falls on all of them alike. Every timed call records how much of the machine other processes used meanwhile
(/proc/stat); calls above nemo2sherpa.benchmark.DISTURBED are left out of the percentiles and counted.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from nemo2sherpa.benchmark import DISTURBED, cpu_seconds, other_load
from nemo2sherpa.decode import GreedyDecoder, Sessions
from nemo2sherpa.validate import encoder_errors
from nemo2sherpa.variants import variant_files, variant_paths

MATRIX_OPS = {"MatMul", "Gemm", "FusedMatMul", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
CONV_OPS = {"Conv", "FusedConv", "ConvInteger"}
INTEGER_OPS = {"MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "ConvInteger"}


def _features(ref: dict, seconds: float) -> np.ndarray:
    """NeMo features of a real clip tiled to `seconds` (100 frames a second)."""
    clip = ref["clip0_features"]
    frames = int(seconds * 100)
    return np.ascontiguousarray(np.tile(clip, (1, 1, -(-frames // clip.shape[2])))[:, :, :frames])


def accuracy(bundle: Path, variant: str, ref: dict, spec: dict) -> dict:
    """Encoder output vs PyTorch's on the evaluation clips (one padded batch), over each clip's valid frames."""
    dec = GreedyDecoder(Sessions.load(bundle, variant), spec["vocab_size"], spec["durations"])
    enc, _ = dec.encode(ref["clips_enc_in"], ref["clips_enc_in_lengths"])
    max_abs, rel = encoder_errors(enc, ref["clips_enc_out"], ref["clips_enc_out_lengths"])
    return {"rel_err": round(rel, 5), "max_abs_diff": round(max_abs, 5)}


def _macs(ev: dict) -> int:
    """Multiply-accumulates of one profiled matrix node, from its input and output shapes."""
    shapes = [list(d.values())[0] for d in ev["args"].get("input_type_shape", [])]
    out = [list(d.values())[0] for d in ev["args"].get("output_type_shape", [])]
    if not shapes or not out:
        return 0
    op = ev["args"]["op_name"]
    if op in MATRIX_OPS:
        k = shapes[0][-1] if not (op == "Gemm" and ev["args"].get("transA")) else shapes[0][0]
        return int(np.prod(out[0])) * int(k)
    if op in CONV_OPS:
        return int(np.prod(out[0])) * int(np.prod(shapes[1][1:]))
    return 0


def profile(bundle: Path, variant: str, feats: np.ndarray, threads: int) -> dict:
    """One profiled encoder call after a warm-up: milliseconds by op type, and multiply-accumulates (integer and
    float) of the matrix ops."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 3
    opts.enable_profiling = True
    opts.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "encoder")
    s = ort.InferenceSession(str(variant_files(bundle, variant)[0]), sess_options=opts, providers=["CPUExecutionProvider"])
    feed = {s.get_inputs()[0].name: feats, s.get_inputs()[1].name: np.array([feats.shape[2]], np.int64)}
    s.run(None, feed)
    s.run(None, feed)
    events = json.loads(Path(s.end_profiling()).read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    last = runs[-1]
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
             and last["ts"] <= e["ts"] <= last["ts"] + last["dur"]]
    by_op: dict[str, float] = {}
    macs = {"integer": 0, "float": 0}
    matrix_ms = {"integer": 0.0, "float": 0.0}
    for e in nodes:
        op = e["args"]["op_name"]
        by_op[op] = by_op.get(op, 0.0) + e["dur"] / 1e3
        kind = "integer" if op in INTEGER_OPS else "float"
        macs[kind] += _macs(e)
        if op in MATRIX_OPS or op in CONV_OPS:
            matrix_ms[kind] += e["dur"] / 1e3
    total = sum(by_op.values())
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:8]
    return {"run_ms": round(last["dur"] / 1e3, 1), "kernel_ms": round(total, 1),
            "matrix_ms": {k: round(v, 1) for k, v in matrix_ms.items()},
            "other_ms": round(total - sum(matrix_ms.values()), 1),
            "top_ops": [{"op": k, "ms": round(v, 1), "share": round(v / total, 3)} for k, v in top],
            "gmacs": {k: round(v / 1e9, 2) for k, v in macs.items()}}


def measured_peaks(threads: int, m: int = 2048, k: int = 1024, n: int = 4096, runs: int = 8) -> dict:
    """What onnxruntime reaches on this machine for one large matrix product [m, k] x [k, n]: fp32 MatMul (GFLOP/s)
    and the int8 recipe's DynamicQuantizeMatMul (QInt8 per-channel weights; GOP/s, quantizing the input included).
    The best of `runs` calls: the yardstick for the encoder's matrix work (the theoretical peak is not reachable)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], [w])
    out = {}
    with tempfile.TemporaryDirectory() as d:
        fp32, int8 = Path(d) / "fp32.onnx", Path(d) / "int8.onnx"
        onnx.save_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(fp32))
        quantize_dynamic(str(fp32), str(int8), per_channel=True, weight_type=QuantType.QInt8)
        x = rng.standard_normal((m, k)).astype(np.float32)
        for name, path in (("fp32", fp32), ("int8", int8)):
            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 3
            s = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
            s.run(None, {"x": x})
            best = min(_wall(lambda: s.run(None, {"x": x})) for _ in range(runs))
            out[name] = round(2 * m * k * n / best)
    return out


def _wall(call) -> float:
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def _timed(call, results: list, loads: list) -> None:
    c0, t0 = cpu_seconds(), time.perf_counter()
    call()
    wall = time.perf_counter() - t0
    results.append(wall)
    loads.append(other_load(c0, cpu_seconds(), wall))


def _summary(times: list[float], loads: list[float]) -> dict:
    quiet = [t for t, x in zip(times, loads) if x is None or x <= DISTURBED]  # None: too short to tell
    use = quiet or times
    measured = [x for x in loads if x is not None]
    return {"p50_s": round(float(np.percentile(use, 50)), 4), "p95_s": round(float(np.percentile(use, 95)), 4),
            "runs": len(use), "disturbed_runs": len(times) - len(quiet),
            "other_load_max": max(measured) if measured else None, "all_disturbed": not quiet}


def interleaved(makers: dict, lengths: list[float], rounds: int) -> dict:
    """makers: recipe -> {length: zero-argument call}. One warm-up call each, then `rounds` rounds."""
    times = {r: {L: [] for L in lengths} for r in makers}
    loads = {r: {L: [] for L in lengths} for r in makers}
    for r, calls in makers.items():
        for L in lengths:
            calls[L]()  # warm-up, not timed
    names = list(makers)
    for i in range(rounds):
        for r in names[i % len(names):] + names[: i % len(names)]:
            for L in lengths:
                _timed(makers[r][L], times[r][L], loads[r][L])
    return {r: {f"{L:g}": _summary(times[r][L], loads[r][L]) for L in lengths} for r in makers}


def encoder_phase(recipes: dict, ref: dict, lengths: list[float], threads: int, rounds: int) -> dict:
    feats = {L: _features(ref, L) for L in lengths}
    sessions = {r: Sessions.load(b, v, threads=threads).encoder for r, (b, v) in recipes.items()}

    def call(s, x):
        names = [i.name for i in s.get_inputs()]
        feed = {names[0]: x, names[1]: np.array([x.shape[2]], np.int64)}
        return lambda: s.run(None, feed)

    return interleaved({r: {L: call(s, feats[L]) for L in lengths} for r, s in sessions.items()}, lengths, rounds)


def sherpa_phase(recipes: dict, lengths: list[float], threads: int, rounds: int) -> dict:
    from nemo2sherpa.audio import fixed_length, load_clips, read_wav
    from nemo2sherpa.sherpa import recognizer

    speech, rate = read_wav(load_clips()[0].path)
    audio = {L: fixed_length(speech, rate, L) for L in lengths}
    recs = {r: recognizer(b, v, threads) for r, (b, v) in recipes.items()}

    def call(rec, a):
        def decode():
            st = rec.create_stream()
            st.accept_waveform(rate, a)
            rec.decode_stream(st)
        return decode

    return interleaved({r: {L: call(rec, audio[L]) for L in lengths} for r, rec in recs.items()}, lengths, rounds)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", action="append", required=True, help="NAME=DIR:VARIANT")
    ap.add_argument("--reference", type=Path, required=True)
    ap.add_argument("--lengths", default="10,30")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    recipes = {}
    for spec_ in a.bundle:
        name, rest = spec_.split("=", 1)
        d, v = rest.rsplit(":", 1)
        recipes[name] = (Path(d), v)
    lengths = [float(x) for x in a.lengths.split(",")]
    threads = [int(x) for x in a.threads.split(",")]
    ref = dict(np.load(a.reference / "reference.npz"))
    spec = json.loads((a.reference / "export.json").read_text())["spec"]
    out: dict = {"machine_cpus": os.cpu_count(), "rounds": a.rounds, "lengths_s": lengths, "threads": threads,
                 "disturbed_above": DISTURBED, "recipes": {}}
    for r, (b, v) in recipes.items():
        files = variant_paths(b, v)
        out["recipes"][r] = {"variant": v, "bundle": str(b), "size_bytes": sum(p.stat().st_size for p in files),
                             "files": {p.name: p.stat().st_size for p in files}, **accuracy(b, v, ref, spec)}
        print(f"{r}: rel_err {out['recipes'][r]['rel_err']}", flush=True)
    out["peaks_ops_per_s"] = {str(t): measured_peaks(t) for t in threads}
    print(f"measured peaks (ops/s): {out['peaks_ops_per_s']}", flush=True)
    feats10 = _features(ref, 10.0)
    for r, (b, v) in recipes.items():
        out["recipes"][r]["profile_10s_2t"] = profile(b, v, feats10, 2)
        print(f"{r}: profile {out['recipes'][r]['profile_10s_2t']['run_ms']} ms", flush=True)
    out["encoder"], out["sherpa"] = {}, {}
    for t in threads:
        t0 = time.monotonic()
        out["encoder"][str(t)] = encoder_phase(recipes, ref, lengths, t, a.rounds)
        print(f"encoder, {t} thread(s): {time.monotonic() - t0:.0f} s", flush=True)
    for t in threads:
        t0 = time.monotonic()
        out["sherpa"][str(t)] = sherpa_phase(recipes, lengths, t, a.rounds)
        print(f"sherpa-onnx, {t} thread(s): {time.monotonic() - t0:.0f} s", flush=True)
    import onnxruntime
    import sherpa_onnx

    out["runtimes"] = {"onnxruntime": onnxruntime.__version__, "sherpa_onnx": sherpa_onnx.__version__}
    a.out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
