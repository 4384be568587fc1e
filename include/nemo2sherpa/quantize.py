"""Stage 4, quantize (ONNX venv, its own process): dynamic int8 -> *.int8.onnx.

QUInt8 weights: a QInt8 encoder ran ~3.5x slower in sherpa-onnx here. onnxruntime writes a full
temporary copy of the model under its temp dir; we point that at the bundle's own scratch
folder and remove it whatever happens.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator

from .variants import fp32_bytes

log = logging.getLogger("nemo2sherpa.quantize")

MODULES = ("encoder", "decoder", "joiner")


class _Mute(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.untyped = 0

    def filter(self, record: logging.LogRecord) -> bool:
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


def _inline_external_data(model_path: Path, data_files: list[Path]) -> None:
    """quantize_dynamic writes its output with external data when its input had some (the 1.1B encoder's
    4.2 GB of fp32 weights). The int8 result is ~1.1 GB: make it one self-contained file, as users expect."""
    import onnx

    total = model_path.stat().st_size + sum(p.stat().st_size for p in data_files)
    if total > 2**31 - 1 - (16 << 20):
        raise RuntimeError(f"{model_path.name} with its weights is {total / 1e9:.2f} GB, over protobuf's 2 GB "
                           f"single-file limit; an int8 file with external data is not supported yet")
    m = onnx.load(str(model_path), load_external_data=True)
    onnx.save_model(m, str(model_path))
    del m
    for p in data_files:
        p.unlink()
    log.info("%s: %d external weight file(s) folded into one %.2f GB file", model_path.name, len(data_files),
             model_path.stat().st_size / 1e9)


def quantize_bundle(bundle: Path, scratch: Path | None = None, frugal: bool = True) -> dict[str, Any]:
    """int8 of every module. frugal=False leaves onnxruntime's quantizer as shipped (for comparison)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from .preflight import before_quantize

    bundle = Path(bundle)
    before_quantize(bundle)
    scratch = Path(scratch or bundle.parent / ".quantize-tmp")
    report: dict[str, Any] = {"files": {}, "timings_s": {}}
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    old_tmp = tempfile.tempdir
    tempfile.tempdir = str(scratch)
    try:
        for name in MODULES:
            src = bundle / f"{name}.onnx"
            dst = bundle / f"{name}.int8.onnx"
            partial = scratch / dst.name
            external = name == "encoder" and (bundle / "encoder.weights").exists()
            t0 = time.monotonic()
            # onnxruntime's quantizer logs a root line per tensor (INFO, and a WARNING for each tensor whose
            # type shape inference missed: 88 at 1.1B). Count them into one line instead.
            muted = _Mute()
            logging.getLogger().addFilter(muted)
            try:
                with without_model_copy() if frugal else nullcontext():
                    quantize_dynamic(
                        model_input=str(src),
                        model_output=str(partial),
                        weight_type=QuantType.QUInt8,
                        use_external_data_format=external,
                    )
            finally:
                logging.getLogger().removeFilter(muted)
            if muted.untyped:
                log.info("%s: onnxruntime could not infer the type of %d tensors; the ops on them stay fp32",
                         dst.name, muted.untyped)
            extra = [p for p in scratch.iterdir() if p.name != dst.name and p.is_file()]
            if extra:
                _inline_external_data(partial, extra)
            if partial.stat().st_size > 2**31 - 1:
                raise RuntimeError(f"{dst.name} is over protobuf's 2 GB limit; an int8 file with external data "
                                   f"is not supported yet")
            os.replace(partial, dst)  # atomic: a killed run never leaves a half-written int8 file
            dt = time.monotonic() - t0
            fp32_size = fp32_bytes(bundle, name)
            report["files"][dst.name] = dst.stat().st_size
            report["timings_s"][dst.name] = round(dt, 2)
            log.info("%-18s %12s bytes (fp32 %s bytes, %.2fx smaller) in %.1f s", dst.name,
                     f"{dst.stat().st_size:,}", f"{fp32_size:,}", fp32_size / dst.stat().st_size, dt)
    finally:
        tempfile.tempdir = old_tmp
        shutil.rmtree(scratch, ignore_errors=True)
    return report
