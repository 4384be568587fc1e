"""Which files make up each variant of a bundle (pure Python: the Airflow side uses it too)."""

from __future__ import annotations

VARIANT_FILES: dict[str, tuple[str, str, str]] = {
    "fp32": ("encoder.onnx", "decoder.onnx", "joiner.onnx"),
    "int8": ("encoder.int8.onnx", "decoder.int8.onnx", "joiner.int8.onnx"),
    "fp16": ("encoder.fp16.onnx", "decoder.fp16.onnx", "joiner.fp16.onnx"),
}
# Made from fp32 after export; each is gated by its transcripts' WER drift against fp32.
REDUCED = ("int8", "fp16")
