"""Which files make up each variant of a bundle (pure Python: the Airflow side uses it too)."""

from __future__ import annotations

from pathlib import Path

VARIANT_FILES: dict[str, tuple[str, str, str]] = {
    "fp32": ("encoder.onnx", "decoder.onnx", "joiner.onnx"),
    "int8": ("encoder.int8.onnx", "decoder.int8.onnx", "joiner.int8.onnx"),
    "fp16": ("encoder.fp16.onnx", "decoder.fp16.onnx", "joiner.fp16.onnx"),
}


def fp32_bytes(bundle: Path, module: str) -> int:
    """An fp32 module's size on disk: its .onnx plus its external weights (the 1.1B encoder.weights), if any."""
    files = (Path(bundle) / f"{module}.onnx", Path(bundle) / f"{module}.weights")
    return sum(p.stat().st_size for p in files if p.exists())


def variant_paths(bundle: Path, variant: str) -> list[Path]:
    """A variant's files on disk: its three .onnx and the external weights beside any of them."""
    out: list[Path] = []
    for name in VARIANT_FILES[variant]:
        onnx = Path(bundle) / name
        out += [p for p in (onnx, onnx.with_suffix(".weights")) if p.exists()]
    return out
