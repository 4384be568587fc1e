"""Stage 5, metadata (ONNX venv): the encoder metadata sherpa-onnx reads, derived from the spec.

sherpa-onnx's NeMo transducer loader needs vocab_size (without blank), subsampling_factor,
pred_rnn_layers, pred_hidden; feat_dim overrides the caller's; normalize_type must be
"per_feature"; TDT decoding is switched on only when `url` contains "tdt".
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from . import PIPELINE_VERSION, __version__
from .modelspec import ModelSpec
from .records import MetadataResult, Source
from .variants import BASE, VARIANTS

log = logging.getLogger("nemo2sherpa.metadata")

REQUIRED_KEYS = ("vocab_size", "subsampling_factor", "pred_rnn_layers", "pred_hidden")
ENCODERS = tuple(v.file("encoder") for v in VARIANTS.values())  # every variant's encoder carries the keys


def source_url(source: Source | None) -> str:
    """Where the checkpoint came from, as published in the encoder's `url`: the Hub repo, or a local checkpoint's
    file name and sha256 (never the worker's path: a published model must not carry the build machine's folders)."""
    if source and source.repo_id:
        return f"https://huggingface.co/{source.repo_id}"
    if source and source.url:  # an object in the user's bucket
        return f"{source.url}?sha256={source.sha256}"
    name = source.path.name if source and source.path else "unknown.nemo"
    return f"nemo:{name}?sha256={source.sha256}" if source and source.sha256 else f"nemo:{name}"


def expected_metadata(spec: ModelSpec, source: Source | None) -> dict[str, str]:
    """The encoder metadata sherpa-onnx reads, every value derived from the spec and the source (None: a bundle
    converted without one says so)."""
    rev = (source.revision if source else None) or "unknown"
    return {
        "vocab_size": str(spec.vocab_size),
        "subsampling_factor": str(spec.subsampling_factor),
        "pred_rnn_layers": str(spec.pred_rnn_layers),
        "pred_hidden": str(spec.pred_hidden),
        "feat_dim": str(spec.feat_dim),
        "normalize_type": spec.normalize_type,
        "model_type": spec.model_class,
        "version": PIPELINE_VERSION,
        "model_author": "NeMo",
        "url": spec.family.url(source_url(source)),
        "comment": (
            f"converted by nemo2sherpa {__version__} ({PIPELINE_VERSION}) from {source.name if source else '?'}@{rev}; "
            f"{spec.family.decoding(spec.durations)}; "
            f"blank id {spec.blank_id}"
        ),
    }


def write_metadata(onnx_path: Path, meta: dict[str, str]) -> bool:
    """Replace an ONNX file's metadata in place, leaving external weights untouched; a file that already carries
    exactly this metadata is left as it is (its bytes, and the sha256 validate_export recorded, unchanged). Whether
    the file was rewritten."""
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    if {p.key: p.value for p in m.metadata_props} == {k: str(v) for k, v in meta.items()}:
        return False
    del m.metadata_props[:]
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=str(v))
    tmp = onnx_path.with_name(onnx_path.name + ".tmp")
    onnx.save_model(m, str(tmp))
    os.replace(tmp, onnx_path)
    return True


def read_metadata(onnx_path: Path) -> dict[str, str]:
    """An ONNX file's metadata as a dict (external weights not loaded)."""
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    return {p.key: p.value for p in m.metadata_props}


def apply_metadata(bundle: Path, spec: ModelSpec, source: Source | None) -> MetadataResult:
    """Write the metadata into every variant's encoder in the bundle (fp32's must be there); encoders that carry it
    already (export writes fp32's, quantize and fp16 copy it) are left untouched."""
    meta = expected_metadata(spec, source)
    done, kept = [], []
    for name in ENCODERS:
        p = Path(bundle) / name
        if p.exists():
            (done if write_metadata(p, meta) else kept).append(name)
    if BASE.file("encoder") not in done + kept:
        raise FileNotFoundError(f"{bundle}/{BASE.file('encoder')} missing: run export first")
    for k, v in meta.items():
        log.info("metadata %-18s = %s", k, v)
    log.info("metadata written to %s; already there in %s", ", ".join(done) or "no file", ", ".join(kept) or "none")
    return MetadataResult(metadata=meta, files=done + kept, written=done)
