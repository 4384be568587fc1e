"""The variants of a bundle, declared once: fp32 from export, the others made from it.

Everything that handles variants reads this registry: the DAG's and the refresh DAG's choices, the
plan, the step that makes the reduced variants (each by its own module, in a child process of its
own), validate's gates, metadata, benchmark and publish. Adding a variant is one module that declares its
`MAKER` (a Maker: how it is made from fp32, and what validate keeps of its report), plus one entry here. Pure
Python: the Airflow side imports it.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

MODULES = ("encoder", "decoder", "joiner")  # the three graphs of a sherpa-onnx NeMo transducer bundle
TOKENS = "tokens.txt"  # every variant's: `piece id` per line, <blk> last
BPE_VOCAB = "bpe.vocab"  # every variant's: `piece<TAB>score` per SentencePiece id, for sherpa-onnx's hotwords
SHARED = (TOKENS, BPE_VOCAB)  # the files all variants of a bundle share, in upload order
WEIGHTS_SUFFIX = ".weights"  # an .onnx file's external weights: encoder.weights beside encoder.onnx


SINGLE_FILE_LIMIT = 2**31 - 1 - (64 << 20)  # protobuf's 2 GB limit on one file, less room for the graph


def single_file_max() -> int:
    """The largest fp32 or fp16 encoder kept in one self-contained .onnx file (SINGLE_FILE_LIMIT). Past it the
    encoder's weights go to one `<encoder>.weights` file beside it (the 1.1B, 0.6b-v2/v3 fp32 encoders).
    NEMO2SHERPA_SINGLE_FILE_MAX lowers it: a test knob (not a user option) that puts a tiny model's files in the
    big models' layout, so every step that reads a bundle is tested on that layout too."""
    return int(os.environ.get("NEMO2SHERPA_SINGLE_FILE_MAX", SINGLE_FILE_LIMIT))


@dataclass(frozen=True)
class Layout:
    """How a variant's encoder lies on disk; sherpa-onnx releases load the two layouts from different versions on."""

    name: str
    summary: str


SINGLE_FILE = Layout("single file", "each graph one self-contained .onnx file")
EXTERNAL_WEIGHTS = Layout("external weights", "the encoder's weights in a .weights file beside its .onnx "
                                              "(over protobuf's 2 GB single-file limit)")
LAYOUTS: dict[str, Layout] = {x.name: x for x in (SINGLE_FILE, EXTERNAL_WEIGHTS)}


# A maker's report is a records.MadeReport; records reads this module, so the name is not imported here.
def _no_figure(report: MadeReport | None) -> dict[str, str | None]:
    return {}


def _no_words(report: MadeReport) -> str | None:
    return None


@dataclass(frozen=True)
class Maker:
    """How a variant is made from fp32, declared by the module that makes it (its `MAKER`): `make(variant, bundle,
    reference, **options)` gives its report (records.MadeReport); where it also leaves that in reference/, the file's
    name (validation.json keeps `MadeReport.recorded()` of it), the validate step's one figure from it and
    VALIDATION.md's line on it."""

    make: Callable[..., MadeReport]
    report: str | None = None  # the report it writes in reference/ (int8: quantize.json)
    headline: Callable[[MadeReport | None], dict[str, str | None]] = _no_figure  # the validate step's figure
    describe: Callable[[MadeReport], str | None] = _no_words  # VALIDATION.md's line


@dataclass(frozen=True)
class Variant:
    """One variant: its file names, how it is made, how validate judges it."""

    name: str
    suffix: str  # file names: encoder{suffix}.onnx (+ encoder{suffix}.weights when over 2 GB)
    summary: str  # one line for the trigger form and --help
    module: str | None = None  # nemo2sherpa.<module> makes it from fp32: its MAKER
    options: tuple[str, ...] = ()  # the plan's keys its make() takes as keyword arguments
    parity_tol: float | None = None  # max abs diff vs PyTorch, gated; None: reported, the variant is gated by drift
    drift_max: float | None = None  # default WER-drift limit vs fp32: the gate (and run param) `<name>_wer_max`
    default: bool = False  # built, and kept published by the refresh, unless a run says otherwise
    archive: str = "tar"  # its release archive's format: ARCHIVE_FORMATS

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
        return tuple(n for f in self.files for n in (f, f.replace(".onnx", WEIGHTS_SUFFIX)))

    def maker(self) -> Maker:
        """How this variant is made from fp32: its module's MAKER (import it only in the venv that runs it)."""
        if not self.module:
            raise ValueError(f"the {self.name} variant is made by export, not from another variant")
        return importlib.import_module(f"{__package__}.{self.module}").MAKER


# Release archives, measured (2026-12-04, this machine): bz2 -9 packs 5.5-6.8 MB/s on one core (the 1.1B's 5.4 GB of
# fp32 + int8 in ~15 min) and gzip -6 23-43 MB/s; they shrink float weights by 5-12% (trained tiny fp32: bz2 0.950,
# gzip 0.925; random 1.1B fp32: 0.885, 0.901) and int8 weights by 0-7% (trained tiny: 0.968, 0.930; random 1.1B:
# 1.003, 0.999). Float variants (GPU and reference use, fetched rarely, GBs) go uncompressed; int8, the one apps
# download, is gzipped in parallel (gzip members back to back, which every gzip and tar reader takes).
ARCHIVE_FORMATS = ("tar", "tar.gz")
BASE = Variant("fp32", "", "the exported graphs; always built (the other variants are made from it)",
               parity_tol=1e-4, default=True)
VARIANTS: dict[str, Variant] = {v.name: v for v in (
    BASE,
    Variant("int8", ".int8", "dynamic int8 weights by the run's int8 recipe: the fast one on CPU",
            module="quantize", options=("int8_recipe",), drift_max=0.05, default=True, archive="tar.gz"),
    Variant("fp16", ".fp16", "fp16 weights and compute, float32 inputs and outputs: for GPUs (onnxruntime CUDA)",
            module="fp16", drift_max=0.05),
)}
VARIANT_FILES: dict[str, tuple[str, str, str]] = {n: v.files for n, v in VARIANTS.items()}


def variant_files(bundle: Path, variant: str) -> tuple[Path, Path, Path]:
    """The variant's encoder, decoder and joiner paths in the bundle."""
    if variant not in VARIANT_FILES:
        raise ValueError(f"unknown variant {variant!r}; known: {sorted(VARIANT_FILES)}")
    e, d, j = VARIANT_FILES[variant]
    return bundle / e, bundle / d, bundle / j


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
    return [p for p in (onnx, onnx.with_suffix(WEIGHTS_SUFFIX)) if p.exists()]


def fp32_bytes(bundle: Path, module: str) -> int:
    """An fp32 module's size on disk: its .onnx plus its external weights (the 1.1B encoder.weights), if any."""
    return sum(p.stat().st_size for p in module_files(bundle, BASE.file(module)))


def variant_paths(bundle: Path, variant: str) -> list[Path]:
    """A variant's files on disk: its three .onnx and the external weights beside any of them. (What a runtime
    loads is the three graphs alone: variant_files.)"""
    return [p for name in VARIANT_FILES[variant] for p in module_files(bundle, name)]


def layout(bundle: Path, variant: str) -> Layout:
    """The variant's layout in this bundle, from its files: external weights when any graph has a .weights file."""
    return EXTERNAL_WEIGHTS if any(p.suffix == WEIGHTS_SUFFIX for p in variant_paths(bundle, variant)) else SINGLE_FILE
