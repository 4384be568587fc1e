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
from pathlib import Path
from typing import Any

log = logging.getLogger("nemo2sherpa.quantize")

MODULES = ("encoder", "decoder", "joiner")


def quantize_bundle(bundle: Path, scratch: Path | None = None) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    bundle = Path(bundle)
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
            logging.disable(logging.INFO)  # onnxruntime logs one root INFO line per tensor
            try:
                quantize_dynamic(
                    model_input=str(src),
                    model_output=str(partial),
                    weight_type=QuantType.QUInt8,
                    use_external_data_format=external,
                )
            finally:
                logging.disable(logging.NOTSET)
            extra = [p for p in scratch.iterdir() if p.name != dst.name and p.is_file()]
            if partial.stat().st_size > 2**31 - 1 or (external and extra):
                raise RuntimeError(f"{dst.name} would need external data; not supported yet")
            os.replace(partial, dst)  # atomic: a killed run never leaves a half-written int8 file
            dt = time.monotonic() - t0
            fp32_size = src.stat().st_size + ((bundle / "encoder.weights").stat().st_size if external else 0)
            report["files"][dst.name] = dst.stat().st_size
            report["timings_s"][dst.name] = round(dt, 2)
            log.info("%-18s %12s bytes (fp32 %s bytes, %.2fx smaller) in %.1f s", dst.name,
                     f"{dst.stat().st_size:,}", f"{fp32_size:,}", fp32_size / dst.stat().st_size, dt)
    finally:
        tempfile.tempdir = old_tmp
        shutil.rmtree(scratch, ignore_errors=True)
    return report
