"""Stage 4b, fp16 (ONNX venv, its own process): fp32 -> *.fp16.onnx, the variant for GPUs.

onnxruntime's float16 converter with keep_io_types: weights and compute in fp16, inputs and outputs
stay float32, so sherpa-onnx (which feeds float32 features and states) loads it unchanged and the
same validation gates apply. The encoder's positions, computed in the graph (positions.py), stay float32.
Shape inference runs first on the file (onnx's path-based inference
works past protobuf's 2 GB limit), then the converter trusts those types. The 1.1B encoder is 2.1 GB
in fp16, over the single-file limit: its weights go to one `encoder.fp16.weights` beside it, as the
fp32 encoder's do. Files appear only when complete (written under a scratch name, then renamed).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from .errors import PermanentError
from .positions import POSITION_NODES
from .records import MadeReport
from .variants import BASE, MODULES, WEIGHTS_SUFFIX, Maker, Variant, fp32_bytes, made_by, single_file_max

log = logging.getLogger("nemo2sherpa.fp16")

FP16 = made_by(__name__.rsplit(".", 1)[-1])  # the variant this module makes (its file names)


def _weights_bytes(model) -> int:
    """Bytes of tensor data: initializers and Constant nodes' values (NeMo's export leaves weights in both)."""
    consts = (a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.HasField("t"))
    return sum(len(t.raw_data) for t in (*model.graph.initializer, *consts))


def fp16_bundle(bundle: Path) -> MadeReport:
    """fp16 of every module (weights and compute; float32 I/O), each file renamed into place when complete."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    from .preflight import before_quantize

    bundle = Path(bundle)
    before_quantize(bundle)  # the same room as int8 needs, at most: one fp32 copy in memory plus the result
    scratch = bundle.parent / ".fp16-tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    report = MadeReport(files={}, timings_s={})
    try:
        for name in MODULES:
            t0 = time.monotonic()
            src = bundle / BASE.file(name)
            dst = bundle / FP16.file(name)
            weights = dst.with_suffix(WEIGHTS_SUFFIX)
            # Types for every tensor, from the file: in memory, onnx refuses models over 2 GB.
            inferred = bundle / f".{name}.inferred.onnx"  # beside the fp32 weights its external refs name
            onnx.shape_inference.infer_shapes_path(str(src), str(inferred))
            try:
                model = onnx.load(str(inferred), load_external_data=True)
            finally:
                inferred.unlink(missing_ok=True)
            # positions computed in the graph (positions.py) stay float32: past 2048 float16 has no exact integer
            kept = [n.name for n in model.graph.node if n.name.startswith(POSITION_NODES)]
            if not kept and any(n.op_type in ("Sin", "Cos") for n in model.graph.node):
                raise PermanentError(f"{src.name} computes sinusoids outside nodes named {POSITION_NODES}*: fp16 "
                                     "would round its positions; positions.POSITION_NODES must name them")
            half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True,
                                            node_block_list=kept or None)
            del model
            OnnxModel(half).topological_sort()  # the converter appends its input casts last; ONNX wants order
            external = name == "encoder" and _weights_bytes(half) > single_file_max()
            partial = scratch / dst.name
            if external:
                onnx.save_model(half, str(partial), save_as_external_data=True, all_tensors_to_one_file=True,
                                location=weights.name, size_threshold=1024)
            else:
                onnx.save_model(half, str(partial))
            del half
            if external:
                os.replace(scratch / weights.name, weights)
            else:
                weights.unlink(missing_ok=True)  # from an earlier run of a bigger model in this folder
            os.replace(partial, dst)
            size = dst.stat().st_size + (weights.stat().st_size if external else 0)
            fp32, dt = fp32_bytes(bundle, name), time.monotonic() - t0
            report.files[dst.name] = size
            report.timings_s[dst.name] = round(dt, 2)
            log.info("%-18s %14s bytes%s (fp32 %s bytes, %.2fx smaller) in %.1f s", dst.name, f"{size:,}",
                     f" with {weights.name}" if external else "", f"{fp32:,}", fp32 / size, dt)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return report


def make(variant: Variant, bundle: Path, reference: Path) -> MadeReport:
    """The variant registry's entry point: the fp16 variant (it writes no report of its own)."""
    assert variant == FP16, variant
    return fp16_bundle(bundle)


MAKER = Maker(make)
