"""Which files make up each variant of a bundle (pure Python: the Airflow side uses it too)."""

from __future__ import annotations

from pathlib import Path

VARIANT_FILES: dict[str, tuple[str, str, str]] = {
    "fp32": ("encoder.onnx", "decoder.onnx", "joiner.onnx"),
    "int8": ("encoder.int8.onnx", "decoder.int8.onnx", "joiner.int8.onnx"),
    "fp16": ("encoder.fp16.onnx", "decoder.fp16.onnx", "joiner.fp16.onnx"),
}
DEFAULT_VARIANTS = ["fp32", "int8"]  # what a conversion builds and the refresh keeps published, unless told otherwise


def module_files(bundle: Path, onnx_name: str) -> list[Path]:
    """An .onnx file of the bundle and the external weights beside it (`encoder.weights` for `encoder.onnx`,
    `encoder.fp16.weights` for `encoder.fp16.onnx`), those that exist."""
    onnx = Path(bundle) / onnx_name
    return [p for p in (onnx, onnx.with_suffix(".weights")) if p.exists()]


def fp32_bytes(bundle: Path, module: str) -> int:
    """An fp32 module's size on disk: its .onnx plus its external weights (the 1.1B encoder.weights), if any."""
    return sum(p.stat().st_size for p in module_files(bundle, f"{module}.onnx"))


def variant_paths(bundle: Path, variant: str) -> list[Path]:
    """A variant's files on disk: its three .onnx and the external weights beside any of them."""
    return [p for name in VARIANT_FILES[variant] for p in module_files(bundle, name)]
