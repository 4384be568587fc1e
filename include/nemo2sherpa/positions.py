"""FastConformer's relative positions, computed inside the exported encoder from the input's length: no table.

NeMo's RelPositionalEncoding keeps a table of sinusoids (2L - 1 rows for inputs up to L frames), built for
`pos_emb_max_len` and grown in PyTorch whenever a longer input arrives (by the input's feature frames, 8x more than
the encoder needs). Export bakes whatever table exists at that moment into encoder.onnx as a constant: the longest
recording a bundle can decode, and part of its size, were set by accident by the longest clip NeMo had seen (the
evaluation set's). `compute_in_graph` swaps the module for one that computes the same sinusoids from the input's
length (NeMo's own float32 arithmetic: in PyTorch the two give identical bits), so the exported graph holds a Range,
a Mul, a Sin and a Cos instead of the table: no length limit but memory, and the encoder's bytes do not depend on
what NeMo transcribed before export. fp16 keeps these nodes (named POSITION_NODES*) in float32: a position past
2048 has no exact float16.
"""

from __future__ import annotations

import logging
import math
from typing import Any

log = logging.getLogger("nemo2sherpa.positions")

POSITION_NODES = "/pos_enc/"  # the exported graph's name prefix of the module's nodes
TABLE_KIND = "RelPositionalEncoding"  # the kind with a growing table (local attention's is fixed by its window)
WINDOW_KIND = "LocalAttRelPositionalEncoding"  # local attention's (localattn): one row per offset in the window
COMPUTED = "computed in the graph from the input's length"
WINDOW = "NeMo's table of the local attention window's offsets (the same whatever the length)"
# What bounds the length a bundle decodes, by how its encoder gets its positions.
NO_LIMIT = ("none but memory: full attention holds scores for every pair of encoder frames (12.5 a second), so "
            "the memory a recording needs grows with the square of its length; split long recordings with a VAD")
LINEAR = ("none but memory: local attention holds scores for each encoder frame's window only, so the memory a "
          "recording needs grows linearly with its length")
NOT_STATED = "not stated: the encoder's positions are not computed in the graph"


def describe(encoder: Any) -> str:
    """How the encoder, as it will be exported, gets its positions: COMPUTED, WINDOW (local attention), or the kind
    of NeMo's module."""
    pos = getattr(encoder, "pos_enc", None)
    if getattr(pos, "in_graph", False):
        return COMPUTED
    return WINDOW if type(pos).__name__ == WINDOW_KIND else f"NeMo's {type(pos).__name__}"


def limit(positions: str | None) -> str:
    """What bounds the length a bundle decodes, given how its encoder gets its positions (export.json)."""
    return {COMPUTED: NO_LIMIT, WINDOW: LINEAR}.get(positions or "", NOT_STATED)


def compute_in_graph(encoder: Any) -> bool:
    """Swap encoder.pos_enc, where it is NeMo's RelPositionalEncoding, for the same positions computed from the
    input's length (nothing else of the module changes: scaling, dropout); whether it was swapped."""
    import torch

    table = getattr(encoder, "pos_enc", None)
    if type(table).__name__ != TABLE_KIND:
        log.info("positions: the encoder's %s is not %s; exported as NeMo builds it", type(table).__name__,
                 TABLE_KIND)
        return False

    class ComputedPositions(torch.nn.Module):
        """RelPositionalEncoding without its table: positions L-1 .. -(L-1), sin on even channels, cos on odd."""

        in_graph = True  # describe(): no table to bound the length

        def __init__(self, nemo: torch.nn.Module) -> None:
            super().__init__()
            self.nemo = nemo
            d = nemo.d_model
            self.register_buffer("div_term", torch.exp(torch.arange(0, d, 2, dtype=torch.float32)
                                                       * -(math.log(10000.0) / d)), persistent=False)

        def extend_pe(self, length, device, dtype) -> None:
            """Nothing to grow: NeMo's encoder calls it before each forward."""

        def forward(self, x: torch.Tensor, cache_len: int = 0):
            """(x scaled and dropped out as NeMo does, the positions' embeddings for x's length)."""
            nemo = self.nemo
            if nemo.xscale:
                x = x * nemo.xscale
            length = x.size(1) + cache_len
            positions = torch.arange(length - 1, -length, -1, dtype=torch.float32, device=x.device).unsqueeze(1)
            angles = positions * self.div_term
            pe = torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).reshape(angles.size(0), -1)
            pe = pe.unsqueeze(0).to(x.dtype)
            if nemo.dropout_emb:
                pe = nemo.dropout_emb(pe)
            return nemo.dropout(x), pe

    rows = int(table.pe.size(1)) if getattr(table, "pe", None) is not None else 0
    encoder.pos_enc = ComputedPositions(table)
    log.info("positions: computed in the graph from the input's length (NeMo's table of %d rows, %.1f MB, left "
             "out; no length limit but memory)", rows, rows * table.d_model * 4 / 1e6)
    return True
