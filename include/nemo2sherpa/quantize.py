"""Stage 4, quantize (ONNX venv, its own process): dynamic int8 -> *.int8.onnx.

Two recipes (INT8_RECIPES), chosen per run (DAG param `int8_recipe`, `--int8-recipe`):

- `matmul-qint8` (default): every pointwise Conv1d (kernel size 1: the conformer conv module's two per
  layer) is first rewritten as the MatMul it is (checked numerically against the fp32 graph), then
  dynamic quantization with QInt8 weights, per output channel, on MatMul (and the decoder's LSTM) only.
  QInt8 weights take onnxruntime's u8 x s8 GEMM, which uses the VNNI dot-product instructions; no
  `ConvInteger` is left (its int8-weight kernel is a slow path, depthwise `ConvInteger` is slower than
  fp32, and onnxruntime 1.17 cannot load it at all). Measured at 1.1B: encoder ~1.8x faster than the
  other recipe, and more accurate (benchmarks/results/int8-recipes-1.1b.md).
- `matmul-qint8-7bit`: the same with 7-bit weights, for x86 CPUs without VNNI, where onnxruntime's u8 x s8
  kernel sums pairs of products in 16 bits and can saturate on full-range int8 weights.
- `sherpa-onnx`: the sherpa-onnx export scripts' recipe, byte for byte: `quantize_dynamic` with QUInt8
  weights on every op type it knows.

onnxruntime writes a full temporary copy of the model under its temp dir; we point that at the
bundle's own scratch folder and remove it whatever happens.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

from .errors import PermanentError
from .records import EncoderRewrite, MadeReport
from .variants import BASE, MODULES, WEIGHTS_SUFFIX, Maker, Variant, fp32_bytes, made_by

log = logging.getLogger("nemo2sherpa.quantize")

INT8 = made_by(__name__.rsplit(".", 1)[-1])  # the variant this module makes (its file names)
# What quantize learned about the int8 variant (recipe, rewrite check): beside export.json in the reference folder,
# read by validate into validation.json.
REPORT = "quantize.json"


@dataclass(frozen=True)
class Int8Recipe:
    """One way to make the int8 variant from fp32: onnxruntime's quantize_dynamic settings, per module."""

    summary: str
    weight_type: str  # onnxruntime QuantType name: "QInt8" (VNNI's u8 x s8 path) or "QUInt8"
    per_channel: bool
    op_types: dict[str, list[str] | None]  # per module; None: every op type onnxruntime quantizes
    pointwise_to_matmul: bool  # rewrite kernel-size-1 Conv1d as MatMul before quantizing
    reduce_range: bool = False  # 7-bit weights: no int16 saturation in the u8 x s8 kernel of CPUs without VNNI


_MATMUL = Int8Recipe(
    summary="pointwise Conv1d rewritten as MatMul, then QInt8 per-channel weights on MatMul (and the decoder's "
            "LSTM) only: onnxruntime's VNNI path, no ConvInteger",
    weight_type="QInt8", per_channel=True, pointwise_to_matmul=True,
    op_types={"encoder": ["MatMul"], "decoder": ["MatMul", "LSTM"], "joiner": ["MatMul"]})
INT8_RECIPES: dict[str, Int8Recipe] = {
    "matmul-qint8": _MATMUL,
    "matmul-qint8-7bit": replace(
        _MATMUL, reduce_range=True,
        summary="as matmul-qint8 with 7-bit weights, for x86 CPUs without VNNI (before Intel Ice Lake / AMD Zen 4), "
                "whose u8 x s8 kernel can saturate on full-range int8 weights (onnxruntime's own advice)"),
    "sherpa-onnx": Int8Recipe(
        summary="the sherpa-onnx export scripts' recipe: QUInt8 weights on every op type",
        weight_type="QUInt8", per_channel=False, pointwise_to_matmul=False,
        op_types={"encoder": None, "decoder": None, "joiner": None}),
}
DEFAULT_INT8_RECIPE = "matmul-qint8"


def int8_recipe(name: str | None) -> str:
    """A recipe name from a param or flag (empty: the default), or InputError naming the choices."""
    from .errors import InputError

    name = (name or DEFAULT_INT8_RECIPE).strip()
    if name not in INT8_RECIPES:
        raise InputError(f"int8 recipe {name!r} is unknown: choose one of {', '.join(INT8_RECIPES)} "
                         f"(default {DEFAULT_INT8_RECIPE})")
    return name


class _Mute(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.untyped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        """Swallow the record, counting the type-inference warnings."""
        self.untyped += "Inference failed or unsupported type" in record.getMessage()
        return False


@contextmanager
def without_model_copy() -> Iterator[None]:
    """Take the third copy of the fp32 weights out of onnxruntime's dynamic quantization.

    ONNXQuantizer (dynamic mode) refreshes its shape information through
    save_and_reload_model_with_shape_infer, which deep-copies the whole model before saving it with
    external data, only so that the save does not turn the caller's proto into external references.
    quantize_dynamic never reads that proto again, so the copy buys nothing: measured on the 1.1B
    encoder it is 4.2 GB of the step's 13 GB peak. This saves the model in place instead; the rest of the
    function is onnxruntime's own, so the int8 files are byte-identical (tests/test_stages.py compares).
    Patched for the duration of one call and only in the module that calls it (onnxruntime pinned)."""
    import onnx
    from onnxruntime.quantization import onnx_quantizer, quant_utils

    stock = onnx_quantizer.save_and_reload_model_with_shape_infer

    def save_in_place_and_reload(model):
        with tempfile.TemporaryDirectory(prefix="ort.quant.") as d:
            path = Path(d) / "model.onnx"
            onnx.save_model(model, str(path), save_as_external_data=True)  # as stock, minus the deepcopy
            return quant_utils.load_model_with_shape_infer(path)

    onnx_quantizer.save_and_reload_model_with_shape_infer = save_in_place_and_reload
    try:
        yield
    finally:
        onnx_quantizer.save_and_reload_model_with_shape_infer = stock


def per_channel_params(weights, axis: int, qtype: int, symmetric: bool, reduce_range: bool):
    """onnxruntime's per-channel weight quantization (BaseQuantizer.quantize_weight_per_channel_impl without
    overrides: compute_data_quant_params, compute_scale_zp and quantize_nparray for each channel), over every channel
    at once. The same float32 and float64 operations in the same order, so the same bytes; returns (quantized
    weights in the weights' shape, zero points, scales)."""
    import numpy as np
    from onnxruntime.quantization.quant_utils import ONNX_TYPE_TO_NP_TYPE, get_qmin_qmax_for_qType

    w = np.moveaxis(np.asarray(weights), axis, 0)
    flat = w.reshape(w.shape[0], -1)
    rmin = np.minimum(flat.min(axis=1), np.array(0, dtype=flat.dtype))
    rmax = np.maximum(flat.max(axis=1), np.array(0, dtype=flat.dtype))
    if symmetric:
        absmax = np.maximum(np.abs(rmin), np.abs(rmax))
        rmin, rmax = -absmax, +absmax
    qmin, qmax = get_qmin_qmax_for_qType(qtype, reduce_range, symmetric=symmetric)
    scale = (rmax.astype(np.float64) - rmin.astype(np.float64)) / (np.float64(qmax) - np.float64(qmin))
    tiny = scale < np.finfo(rmax.dtype).tiny
    if symmetric:
        zero = np.full(len(scale), np.round((qmin + qmax) / np.array(2.0, dtype=np.float64)), dtype=qmin.dtype)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            zero = np.round(qmin - rmin / scale).astype(qmin.dtype)
    stored = scale.astype(rmax.dtype)
    stored[tiny], zero[tiny] = 1.0, 0
    lo, hi = get_qmin_qmax_for_qType(qtype, reduce_range=False, symmetric=False)
    q = (flat.astype(np.float32) / stored[:, None]).round() + zero[:, None]
    np.clip(q, lo, hi, out=q)
    q = np.moveaxis(q.astype(ONNX_TYPE_TO_NP_TYPE[qtype]).reshape(w.shape), 0, axis)
    return q, zero, stored


@contextmanager
def per_channel_at_once() -> Iterator[None]:
    """onnxruntime quantizes per channel in a Python loop, channel by channel (~70 s of the 1.1B encoder's
    quantization); this computes the same figures for every channel in one numpy pass (per_channel_params) where no
    per-channel override applies, and leaves the stock loop everywhere else. Byte-identical int8 files
    (tests/test_int8.py compares with the stock quantizer for every recipe). Patched for one call."""
    import numpy as np
    import onnx
    from onnxruntime.quantization import base_quantizer
    from onnxruntime.quantization.quant_utils import TENSOR_NAME_QUANT_SUFFIX, find_by_name, tensor_proto_to_array

    cls = base_quantizer.BaseQuantizer
    stock = cls.quantize_weight_per_channel_impl

    def at_once(self, weight_name, weight_qType, channel_axis, reduce_range=True, keep_float_weight=False):  # noqa: N803
        init = find_by_name(weight_name, self.model.initializer())
        weights = tensor_proto_to_array(init) if init is not None else None
        plain = (weight_qType in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) and self.min_real_range is None
                 and weights is not None and weights.dtype == np.float32 and weights.ndim > 0 and weights.size > 0
                 and not self.tensor_quant_overrides.get_per_channel_overrides(weight_name, None))
        if not plain:
            return stock(self, weight_name, weight_qType, channel_axis, reduce_range, keep_float_weight)
        axis = channel_axis % weights.ndim
        q, zero, scale = per_channel_params(weights, axis, weight_qType, self.is_weight_symmetric(weight_qType),
                                            self.reduce_range and reduce_range)
        names = (weight_name + TENSOR_NAME_QUANT_SUFFIX, weight_name + "_zero_point", weight_name + "_scale")
        shape = [init.dims[axis]]
        self.model.initializer_extend([onnx.helper.make_tensor(names[2], init.data_type, shape, scale.tolist()),
                                       onnx.helper.make_tensor(names[1], weight_qType, shape, zero.tolist())])
        if not keep_float_weight:
            self.model.initializer_extend([onnx.numpy_helper.from_array(q.reshape(init.dims), names[0])])
        return names

    cls.quantize_weight_per_channel_impl = at_once
    try:
        yield
    finally:
        cls.quantize_weight_per_channel_impl = stock


def _inline_external_data(model_path: Path, data_files: list[Path]) -> None:
    """quantize_dynamic writes its output with external data when its input had some (the 1.1B encoder's
    4.2 GB of fp32 weights). The int8 result is ~1.1 GB: make it one self-contained file, as users expect, and the
    same bytes onnxruntime writes for a single-file input (the loaded tensors' data_location, set to DEFAULT by
    onnx, is cleared: an explicitly set field is serialised)."""
    import onnx

    total = model_path.stat().st_size + sum(p.stat().st_size for p in data_files)
    if total > 2**31 - 1 - (16 << 20):
        raise PermanentError(f"{model_path.name} with its weights is {total / 1e9:.2f} GB, over protobuf's 2 GB "
                             f"single-file limit; an int8 file with external data is not supported yet")
    m = onnx.load(str(model_path), load_external_data=True)
    for t in m.graph.initializer:
        if t.HasField("data_location") and t.data_location == onnx.TensorProto.DEFAULT:
            t.ClearField("data_location")
    onnx.save_model(m, str(model_path))
    del m
    for p in data_files:
        p.unlink()
    log.info("%s: %d external weight file(s) folded into one %.2f GB file", model_path.name, len(data_files),
             model_path.stat().st_size / 1e9)


def _swaps_last_two(node) -> bool:
    """A Transpose with perm (0, 2, 1): [N, C, T] <-> [N, T, C]."""
    return node is not None and node.op_type == "Transpose" and any(
        a.name == "perm" and list(a.ints) == [0, 2, 1] for a in node.attribute)


def _pointwise_conv1d(node, inits: dict) -> bool:
    """A Conv that is a per-frame matrix product: 1-D, kernel size 1, stride 1, no padding, one group, weight constant."""
    from onnx import helper

    if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in inits:
        return False
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    dims = list(inits[node.input[1]].dims)
    return (len(dims) == 3 and dims[2] == 1 and a.get("group", 1) == 1 and list(a.get("strides", [1])) == [1]
            and not any(a.get("pads", [0, 0])) and list(a.get("dilations", [1])) == [1]
            and a.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET"))


def pointwise_convs_to_matmul(model) -> int:
    """Rewrite, in place, every pointwise Conv1d ([N, Cin, T] -> [N, Cout, T], kernel size 1) as the same product
    on [N, T, C]: MatMul by the transposed weight, then Add of the bias. A Transpose(0, 2, 1) that only feeds the
    Conv, or that alone reads its output, is absorbed (the conformer's conv module has both, so it ends with no
    Transpose of its own); elsewhere a Transpose is added on either side. Returns how many Convs were rewritten."""
    from collections import Counter, defaultdict

    import numpy as np
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    readers: dict[str, list] = defaultdict(list)
    for n in g.node:
        for i in n.input:
            readers[i].append(n)
    graph_outputs = {o.name for o in g.output}
    uses = Counter({k: len(v) for k, v in readers.items()}) + Counter(graph_outputs)
    absorbed: set[int] = set()
    replacement: dict[int, list] = {}
    for conv in g.node:
        if not _pointwise_conv1d(conv, inits):
            continue
        base = conv.name or conv.output[0]
        weight = numpy_helper.to_array(inits[conv.input[1]])[:, :, 0]  # [Cout, Cin]
        g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight.T), f"{base}/matmul_weight"))
        nodes = []
        src = producer.get(conv.input[0])
        if _swaps_last_two(src) and uses[src.output[0]] == 1 and id(src) not in absorbed:
            x = src.input[0]
            absorbed.add(id(src))
        else:
            x = f"{base}/ntc_in"
            nodes.append(helper.make_node("Transpose", [conv.input[0]], [x], f"{base}/to_ntc", perm=[0, 2, 1]))
        y = conv.output[0]
        after = readers.get(y, [])
        absorb_out = len(after) == 1 and _swaps_last_two(after[0]) and y not in graph_outputs
        if absorb_out:
            absorbed.add(id(after[0]))
        last = after[0].output[0] if absorb_out else f"{base}/ntc_out"
        bias = conv.input[2] if len(conv.input) > 2 and conv.input[2] else None
        mm = last if bias is None else f"{base}/matmul_out"
        nodes.append(helper.make_node("MatMul", [x, f"{base}/matmul_weight"], [mm], f"{base}/MatMul"))
        if bias is not None:
            nodes.append(helper.make_node("Add", [mm, bias], [last], f"{base}/Add"))
        if not absorb_out:
            nodes.append(helper.make_node("Transpose", [last], [y], f"{base}/to_nct", perm=[0, 2, 1]))
        replacement[id(conv)] = nodes
    if replacement:
        _splice(g, replacement, absorbed)
    return len(replacement)


def _splice(g, replacement: dict[int, list], absorbed: set[int]) -> None:
    """Put each Conv's replacement nodes in its place, drop the absorbed Transposes, the Conv weights (now held
    transposed) and the shape records of tensors that are gone."""
    kept = []
    for n in g.node:
        if id(n) in replacement:
            kept.extend(replacement[id(n)])
        elif id(n) not in absorbed:
            kept.append(n)
    del g.node[:]
    g.node.extend(kept)
    used = {i for n in g.node for i in n.input}
    stale = [t for t in g.initializer if t.name not in used]
    for t in stale:
        g.initializer.remove(t)
    produced = {o for n in g.node for o in n.output} | {i.name for i in g.input} | {t.name for t in g.initializer}
    for vi in [v for v in g.value_info if v.name not in produced]:
        g.value_info.remove(vi)


# The rewrite must compute what the Conv did: the same products summed in another order. Measured ~1e-6 of the
# output's scale; anything near this limit is a wrong graph, not rounding.
REWRITE_TOL = 1e-4


def encoder_outputs_match(original: Path, rewritten: Path, feat_dim: int, frames: int = 157,
                          reference: Path | None = None) -> float:
    """The rewritten encoder's output against the original's: PyTorch's, recorded at export (`reference`: its
    reference.npz, the encoder on a random batch with odd frame counts), or else the exported graph's on the same
    random features (a second 4 GB session at 1.1B, one at a time). Returns max |a - b| / max(1, max |a|) over the
    valid frames, and raises GateFailed above REWRITE_TOL."""
    import numpy as np
    import onnxruntime as ort

    from .errors import GateFailed
    from .reference import encoder_batch

    def run(path: Path, x, lengths):
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        s = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in s.get_inputs()]
        return s.run(None, {names[0]: x, names[1]: lengths})

    if reference is not None and Path(reference).exists():
        features, lengths, want, want_len = encoder_batch(Path(reference))
        got, _ = run(rewritten, features, lengths)
    else:
        x = np.random.default_rng(0).standard_normal((1, feat_dim, frames)).astype(np.float32)
        lengths = np.array([frames], np.int64)
        (want, want_len), (got, _) = run(original, x, lengths), run(rewritten, x, lengths)
    valid = [(got[i, :, :n], want[i, :, :n]) for i, n in enumerate(int(n) for n in want_len)]
    diff = max(float(np.abs(a - b).max()) for a, b in valid) / max(1.0, max(float(np.abs(b).max()) for _, b in valid))
    if not diff <= REWRITE_TOL:
        raise GateFailed(f"the encoder with its pointwise convolutions as MatMul differs from the exported one by "
                         f"{diff:.3g} (relative; allowed {REWRITE_TOL:g}): the rewrite is wrong for this graph. Use "
                         f"int8 recipe 'sherpa-onnx' for this model, and report it")
    return diff


def _matmul_encoder(src: Path, work: Path, external: bool,
                    reference: Path | None = None) -> tuple[Path, EncoderRewrite]:
    """The fp32 encoder with its pointwise convolutions as MatMul, saved in `work` (its weights in one file beside
    it when the source has external weights), and checked against the source on the same input."""
    import onnx

    t0 = time.monotonic()
    model = onnx.load(str(src), load_external_data=True)
    n = pointwise_convs_to_matmul(model)
    feat_dim = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    work.mkdir(parents=True, exist_ok=True)
    out = work / src.name
    if external:
        onnx.save_model(model, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=src.with_suffix(WEIGHTS_SUFFIX).name, size_threshold=1024)
    else:
        onnx.save_model(model, str(out))
    del model
    diff = encoder_outputs_match(src, out, feat_dim, reference=reference) if n else 0.0
    log.info("%s: %d pointwise convolutions rewritten as MatMul; same output as the exported graph within %.2g "
             "(relative, allowed %g) in %.1f s", src.name, n, diff, REWRITE_TOL, time.monotonic() - t0)
    return out, EncoderRewrite(pointwise_convs_as_matmul=n, rewrite_max_rel_diff=float(f"{diff:.3g}"))


def integer_ops(path: Path) -> dict[str, int]:
    """How many nodes of each integer op type an int8 graph holds (read without its weights)."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    counts: dict[str, int] = {}
    for n in m.graph.node:
        if "Integer" in n.op_type or n.op_type.startswith("DynamicQuantize"):
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return dict(sorted(counts.items()))


def _quantize_module(bundle: Path, module: str, scratch: Path, rc: Int8Recipe, frugal: bool,
                     report: MadeReport, reference: Path | None = None) -> None:
    """One module's int8 file by the recipe, renamed into place when complete; its figures go into `report`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = bundle / BASE.file(module)
    dst = bundle / INT8.file(module)
    partial = scratch / dst.name
    external = src.with_suffix(WEIGHTS_SUFFIX).exists()  # the 1.1B encoder's weights beside it
    # With external fp32 weights onnxruntime writes the int8 ones beside the graph too, and they are folded into one
    # file afterwards (_inline_external_data): asked to write one file itself, it serialises the whole int8 model
    # while the fp32 one is still in memory (measured at 1.1B: peak 12.3 GB, against 10.1 GB this way).
    external_out = external
    t0 = time.monotonic()
    fp32 = src
    if rc.pointwise_to_matmul and module == "encoder":
        fp32, report.encoder = _matmul_encoder(src, scratch / "matmul", external, reference)
        report.timings_s["encoder: pointwise rewrite and its check"] = round(time.monotonic() - t0, 2)
    # onnxruntime's quantizer logs a root line per tensor (INFO, and a WARNING for each tensor whose
    # type shape inference missed: 88 at 1.1B). Count them into one line instead.
    muted = _Mute()
    logging.getLogger().addFilter(muted)
    try:
        with without_model_copy() if frugal else nullcontext(), per_channel_at_once() if frugal else nullcontext():
            quantize_dynamic(
                model_input=str(fp32),
                model_output=str(partial),
                op_types_to_quantize=rc.op_types[module],
                per_channel=rc.per_channel,
                reduce_range=rc.reduce_range,
                weight_type=getattr(QuantType, rc.weight_type),
                use_external_data_format=external_out,
            )
    finally:
        logging.getLogger().removeFilter(muted)
    shutil.rmtree(scratch / "matmul", ignore_errors=True)  # the rewritten fp32 copy: 4.2 GB at 1.1B
    if muted.untyped:
        log.info("%s: onnxruntime could not infer the type of %d tensors; the ops on them stay fp32",
                 dst.name, muted.untyped)
    extra = [p for p in scratch.iterdir() if p.name != dst.name and p.is_file()]
    if extra:
        _inline_external_data(partial, extra)
    if partial.stat().st_size > 2**31 - 1:
        raise PermanentError(f"{dst.name} is over protobuf's 2 GB limit; an int8 file with external data "
                             f"is not supported yet")
    ops = report.integer_ops[dst.name] = integer_ops(partial)
    os.replace(partial, dst)  # atomic: a killed run never leaves a half-written int8 file
    dt = time.monotonic() - t0
    fp32_size = fp32_bytes(bundle, module)
    report.files[dst.name] = dst.stat().st_size
    report.timings_s[dst.name] = round(dt, 2)
    log.info("%-18s %12s bytes (fp32 %s bytes, %.2fx smaller) in %.1f s; integer ops: %s", dst.name,
             f"{dst.stat().st_size:,}", f"{fp32_size:,}", fp32_size / dst.stat().st_size, dt,
             ", ".join(f"{k} {v}" for k, v in ops.items()) or "none")


def quantize_bundle(bundle: Path, scratch: Path | None = None, frugal: bool = True, recipe: str | None = None,
                    reference: Path | None = None) -> MadeReport:
    """int8 of every module by the named recipe (INT8_RECIPES; default DEFAULT_INT8_RECIPE). frugal=False leaves
    onnxruntime's quantizer as shipped (for comparison). With `reference`, the report also goes to
    <reference>/quantize.json for validate."""
    from .preflight import before_quantize
    from .reference import FILE as reference_file

    name = int8_recipe(recipe)
    rc = INT8_RECIPES[name]
    bundle = Path(bundle)
    before_quantize(bundle)
    scratch = Path(scratch or bundle.parent / ".quantize-tmp")
    report = MadeReport(recipe=name, summary=rc.summary, integer_ops={}, files={}, timings_s={})
    log.info("int8 recipe %s: %s", name, rc.summary)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    old_tmp = tempfile.tempdir
    tempfile.tempdir = str(scratch)
    try:
        for module in MODULES:
            _quantize_module(bundle, module, scratch, rc, frugal, report,
                             Path(reference) / reference_file if reference is not None else None)
    finally:
        tempfile.tempdir = old_tmp
        shutil.rmtree(scratch, ignore_errors=True)
    if reference is not None:
        Path(reference, REPORT).write_text(json.dumps(report.to_json(), indent=2))
    return report


def make(variant: Variant, bundle: Path, reference: Path, int8_recipe: str | None = None) -> MadeReport:
    """The variant registry's entry point: the int8 variant by the run's recipe, its report for validate."""
    assert variant == INT8, variant
    return quantize_bundle(bundle, recipe=int8_recipe, reference=reference)


def headline(report: MadeReport | None) -> dict[str, str | None]:
    """The validate step's one figure for int8: the recipe."""
    return {f"{INT8.name}_recipe": report.recipe if report else None}


def describe(q: MadeReport) -> str:
    """VALIDATION.md's line on how the int8 files were made."""
    enc = q.encoder
    ops = (q.integer_ops or {}).get(INT8.file("encoder"), {})
    return (f"{INT8.name} recipe `{q.recipe}`: {q.summary}" + (
        f"; {enc.pointwise_convs_as_matmul} pointwise convolutions rewritten as MatMul, same fp32 output "
        f"within {enc.rewrite_max_rel_diff:g} (relative)" if enc else "")
        + f"; integer ops in the {INT8.name} encoder: "
        + (", ".join(f"{k} {n}" for k, n in ops.items()) or "none") + ".")


MAKER = Maker(make, REPORT, headline, describe)
