"""The variants of a bundle, declared once: fp32 from export, the others made from it.

Everything that handles variants reads this registry: the DAG's and the refresh DAG's choices, the
plan, the step that makes the reduced variants (each by its own module, in a child process of its
own), validate's gates, metadata, benchmark and publish. Adding a variant is one module with a
`make(variant, bundle, reference, **options)` function, plus one entry here. Pure Python: the Airflow
side imports it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

MODULES = ("encoder", "decoder", "joiner")  # the three graphs of a sherpa-onnx NeMo transducer bundle
TOKENS = "tokens.txt"  # every variant's: `piece id` per line, <blk> last
BPE_VOCAB = "bpe.vocab"  # every variant's: `piece<TAB>score` per SentencePiece id, for sherpa-onnx's hotwords
SHARED = (TOKENS, BPE_VOCAB)  # the files all variants of a bundle share, in upload order


@dataclass(frozen=True)
class Variant:
    """One variant: its file names, how it is made, how validate judges it."""

    name: str
    suffix: str  # file names: encoder{suffix}.onnx (+ encoder{suffix}.weights when over 2 GB)
    summary: str  # one line for the trigger form and --help
    module: str | None = None  # nemo2sherpa.<module> makes it from fp32 (make(); optional REPORT, recorded, describe)
    options: tuple[str, ...] = ()  # the plan's keys its make() takes as keyword arguments
    parity_tol: float | None = None  # max abs diff vs PyTorch, gated; None: reported, the variant is gated by drift
    drift_max: float | None = None  # default WER-drift limit vs fp32: the gate (and run param) `<name>_wer_max`
    default: bool = False  # built, and kept published by the refresh, unless a run says otherwise

    def file(self, module: str) -> str:
        """The .onnx file of one module (encoder, decoder, joiner) in this variant."""
        return f"{module}{self.suffix}.onnx"

    @property
    def files(self) -> tuple[str, str, str]:
        """The variant's three .onnx files: encoder, decoder, joiner."""
        return tuple(self.file(m) for m in MODULES)  # type: ignore[return-value]

    @property
    def published(self) -> tuple[str, ...]:
        """Every file of the variant a bundle may hold, in upload order: each .onnx, then its external weights."""
        return tuple(n for f in self.files for n in (f, f.replace(".onnx", ".weights")))

    def maker(self) -> ModuleType:
        """The module that makes this variant from fp32 (import it only in the venv that runs it)."""
        if not self.module:
            raise ValueError(f"the {self.name} variant is made by export, not from another variant")
        return importlib.import_module(f"{__package__}.{self.module}")


BASE = Variant("fp32", "", "the exported graphs; always built (the other variants are made from it)",
               parity_tol=1e-4, default=True)
VARIANTS: dict[str, Variant] = {v.name: v for v in (
    BASE,
    Variant("int8", ".int8", "dynamic int8 weights by the run's int8 recipe: the fast one on CPU",
            module="quantize", options=("int8_recipe",), drift_max=0.05, default=True),
    Variant("fp16", ".fp16", "fp16 weights and compute, float32 inputs and outputs: for GPUs (onnxruntime CUDA)",
            module="fp16", drift_max=0.05),
)}
VARIANT_FILES: dict[str, tuple[str, str, str]] = {n: v.files for n, v in VARIANTS.items()}
DEFAULT_VARIANTS = [n for n, v in VARIANTS.items() if v.default]  # what a conversion builds and the refresh keeps
MADE = [v for v in VARIANTS.values() if v.module]  # made from fp32, in this order


def made_by(module: str) -> Variant:
    """The variant a module makes (quantize: int8), for that module's own file names."""
    return next(v for v in MADE if v.module == module)


def with_base(names: list[str]) -> list[str]:
    """The variants a run builds: those asked for plus fp32, which the others are made from."""
    return sorted(set(names) | {BASE.name})


def base_first(names: list[str]) -> list[str]:
    """fp32 first: the other variants are measured against it."""
    return sorted(names, key=lambda n: n != BASE.name)


def module_files(bundle: Path, onnx_name: str) -> list[Path]:
    """An .onnx file of the bundle and the external weights beside it (`encoder.weights` for `encoder.onnx`,
    `encoder.fp16.weights` for `encoder.fp16.onnx`), those that exist."""
    onnx = Path(bundle) / onnx_name
    return [p for p in (onnx, onnx.with_suffix(".weights")) if p.exists()]


def fp32_bytes(bundle: Path, module: str) -> int:
    """An fp32 module's size on disk: its .onnx plus its external weights (the 1.1B encoder.weights), if any."""
    return sum(p.stat().st_size for p in module_files(bundle, BASE.file(module)))


def variant_paths(bundle: Path, variant: str) -> list[Path]:
    """A variant's files on disk: its three .onnx and the external weights beside any of them."""
    return [p for name in VARIANT_FILES[variant] for p in module_files(bundle, name)]
