"""Local attention, opt in: an encoder whose memory grows linearly with a recording's length, exported right.

NeMo's answer to long audio is local attention (`change_attention_model("rel_pos_local_attn", [left, right])`: each
encoder frame attends to `left` frames before it and `right` after, Longformer's overlapping chunks). Full attention
holds scores for every pair of frames, so its memory grows with the square of the length (10 minutes at 1.1B: ~16 GB
in sherpa-onnx); local attention's grows linearly. NeMo's own ONNX export of it is silently wrong, for two reasons
in its Longformer code, measured on the tiny fixture (outputs differ from PyTorch by up to 1.3 on a 4 s clip, 3.1 on
48 s, against outputs around 5):
- `mask_invalid_locations` masks the window's edges with an in-place `masked_fill_` on a view of the scores, which
  the trace loses: the positions before the first frame and past the last one keep their scores;
- `_chunk_overlap` and `sliding_chunks_matmul_pv` make overlapping chunks with `as_strided`, whose strides the trace
  freezes at the export input's length (other lengths fail in onnxruntime, "Gather ... indices element out of data
  bounds", or read the wrong frames).
`exportable` rebinds the three methods on each such attention module to the same arithmetic out of place: chunks
gathered with `index_select`, the edges masked by a computed mask into a new tensor. In PyTorch the results are
bit-identical to NeMo's (a test holds that); the exported graph then matches PyTorch at every length.
"""

from __future__ import annotations

import logging
import re
import types
from typing import Any

log = logging.getLogger("nemo2sherpa.localattn")

ATTENTION_KIND = "rel_pos_local_attn"  # NeMo's name for it (change_attention_model)
MODULE_KIND = "RelPositionMultiHeadAttentionLongformer"  # the attention modules it makes
DEFAULT_CONTEXT = (128, 128)  # encoder frames each side (80 ms each: ~10 s), what NeMo's model cards suggest
FULL = "full"  # the checkpoint's own attention (export.json's `attention`)
LOCAL_ATTENTION_PATTERN = r"^(off|on|[1-9][0-9]{0,4} *, *[1-9][0-9]{0,4})$"  # the DAG form's choices (parse takes them)


def describe(context: tuple[int, int] | None) -> str:
    """export.json's `attention`: "full", or "local [left, right]" (encoder frames each side)."""
    return FULL if not context else f"local [{context[0]}, {context[1]}]"


def parse(text: str | list[int] | None) -> tuple[int, int] | None:
    """A run's choice, in LOCAL_ATTENTION_PATTERN's forms: "off" (or nothing): the checkpoint's own attention; "on":
    DEFAULT_CONTEXT; "L,R" (or [L, R]): that many encoder frames before and after each frame. ValueError naming the
    forms otherwise."""
    if isinstance(text, (list, tuple)):
        text = ",".join(str(x) for x in text)
    t = (text or "off").strip()
    if not re.match(LOCAL_ATTENTION_PATTERN, t):
        raise ValueError(f"local attention {text!r}: give off, on ({DEFAULT_CONTEXT[0]},{DEFAULT_CONTEXT[1]}) or "
                         f"'left,right' in encoder frames (each > 0)")
    if t in ("off", "on"):
        return DEFAULT_CONTEXT if t == "on" else None
    left, right = (int(p) for p in t.split(","))
    return left, right


def use_local_attention(model: Any, context: tuple[int, int]) -> int:
    """Switch a restored NeMo model to local attention with `context` frames each side (NeMo's own switch: the same
    weights, each attention module replaced); the number of attention modules switched."""
    model.change_attention_model(self_attention_model=ATTENTION_KIND, att_context_size=list(context))
    model.eval()  # the new modules are made in training mode: their dropout would be on
    n = sum(type(m).__name__ == MODULE_KIND for m in model.encoder.modules())
    if not n:
        raise RuntimeError(f"change_attention_model({ATTENTION_KIND!r}) left no {MODULE_KIND} in the encoder")
    log.info("local attention: %d attention modules switched to %s %s (each encoder frame attends to %d frames "
             "before and %d after)", n, ATTENTION_KIND, list(context), context[0], context[1])
    return n


def _chunks(x: Any, count: Any, size: int, step: int) -> Any:
    """`count` chunks of `size` frames every `step` frames along dim 1 of x (batch, time, d): a gather, no strides."""
    import torch

    starts = torch.arange(count, device=x.device).unsqueeze(1) * step
    index = (starts + torch.arange(size, device=x.device).unsqueeze(0)).reshape(-1)
    return x.index_select(1, index).reshape(x.size(0), count, size, x.size(2))


def _chunk_overlap(self: Any, x: Any, w: int) -> Any:
    """NeMo's overlapping chunks of 2w frames every w frames (batch x head, chunks, 2w, size), gathered."""
    return _chunks(x, x.size(1) // w - 1, 2 * w, w)


def _edges_masked(scores: Any, w: int) -> Any:
    """The scores (batch, head, time, 2w + 1) with -inf where the window reaches before the first frame or past the
    last: NeMo's mask_invalid_locations, out of place."""
    import torch

    t = torch.arange(scores.size(2), device=scores.device).unsqueeze(1)
    key = t + torch.arange(2 * w + 1, device=scores.device).unsqueeze(0) - w  # the frame each column attends to
    return scores.masked_fill((key < 0) | (key >= scores.size(2)), -float("inf"))


def _sliding_chunks_matmul_qk(self: Any, q: Any, k: Any, w: int, padding_value: float) -> Any:
    """NeMo's sliding_chunks_matmul_qk (query x key over each frame's window), assembled by concatenation instead of
    writes into an empty tensor, the edges masked out of place."""
    import torch
    import torch.nn.functional as F

    bsz, heads, seqlen, head_dim = q.size()
    q = q.reshape(bsz * heads, seqlen, head_dim)
    k = k.reshape(bsz * heads, seqlen, head_dim)
    chunk_attn = torch.einsum("bcxd,bcyd->bcxy", (self._chunk_overlap(q, w), self._chunk_overlap(k, w)))
    diag = self._skew(chunk_attn, direction=(0, 0, 0, 1), padding_value=padding_value)
    # (batch x head, chunks, 2w, 2w + 1) -> (batch x head, chunks + 1, w, 2w + 1): the lower triangle (w columns),
    # then the frame itself and the upper triangle (w + 1); the first chunk's lower triangle lies before frame 0
    upper = torch.cat([diag[:, :, :w, : w + 1], diag[:, -1:, w:, : w + 1]], dim=1)
    first = F.pad(diag[:, :1, : w - 1, w + 2:], (1, 0, 1, 0))  # (.., 1, w, w); what it leaves is masked below
    lower = torch.cat([first, diag[:, :, -(w + 1): -1, w + 1:]], dim=1)
    out = torch.cat([lower, upper], dim=-1).reshape(bsz, heads, seqlen, 2 * w + 1)
    return _edges_masked(out, w)


def _sliding_chunks_matmul_pv(self: Any, prob: Any, v: Any, w: int) -> Any:
    """NeMo's sliding_chunks_matmul_pv (probabilities x values over each window): v's chunks of 3w frames every w
    frames gathered instead of strided."""
    import torch
    import torch.nn.functional as F

    bsz, heads, seqlen, head_dim = v.size()
    chunk_prob = prob.reshape(bsz * heads, seqlen // w, w, 2 * w + 1)
    padded_v = F.pad(v.reshape(bsz * heads, seqlen, head_dim), (0, 0, w, w), value=-1)
    chunk_v = _chunks(padded_v, seqlen // w, 3 * w, w)
    context = torch.einsum("bcwd,bcdh->bcwh", (self._skew2(chunk_prob, padding_value=0), chunk_v))
    return context.reshape(bsz, heads, seqlen, head_dim).transpose(1, 2)


def exportable(encoder: Any) -> int:
    """Rebind each local-attention module's chunking and masking to the out-of-place forms above (see the module's
    docstring); how many modules. Global tokens (Longformer's) are refused: NeMo's Parakeet models have none."""
    n = 0
    for m in encoder.modules():
        if type(m).__name__ != MODULE_KIND:
            continue
        if getattr(m, "global_tokens", 0):
            raise NotImplementedError(f"{MODULE_KIND} with {m.global_tokens} global tokens: not exported correctly")
        m._chunk_overlap = types.MethodType(_chunk_overlap, m)
        m.sliding_chunks_matmul_qk = types.MethodType(_sliding_chunks_matmul_qk, m)
        m.sliding_chunks_matmul_pv = types.MethodType(_sliding_chunks_matmul_pv, m)
        n += 1
    return n
