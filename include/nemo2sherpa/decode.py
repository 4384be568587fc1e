"""Greedy TDT / RNNT decoding over the three ONNX sessions (numpy + onnxruntime).

The same decoder serves the decoding-parity gate (CPU) and the onnxruntime benchmarks (CPU and
CUDA). It follows NeMo's greedy TDT rule: token = argmax over vocab+blank, skip =
durations[argmax over the duration logits]; a non-blank token updates the prediction net; the
frame advances by the skip; at most `max_symbols` symbols per frame.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .records import Divergence
from .variants import TOKENS, variant_files


def read_tokens(bundle: Path) -> list[str]:
    """tokens.txt as a list indexed by id (the last entry is <blk>)."""
    lines = (Path(bundle) / TOKENS).read_text(encoding="utf-8").splitlines()
    return [line.rsplit(" ", 1)[0] for line in lines]


def ids_to_text(ids: list[int], pieces: list[str]) -> str:
    """SentencePiece pieces to words, as sherpa-onnx and NeMo join them ('\u2581' starts a word)."""
    return "".join(pieces[i] for i in ids if 0 <= i < len(pieces)).replace("\u2581", " ").strip()


@dataclass
class Sessions:
    """onnxruntime sessions over a variant's three graphs."""

    encoder: object
    decoder: object
    joiner: object
    providers: list[str]

    @classmethod
    def load(cls, bundle: Path, variant: str, providers: list[str] | None = None, threads: int = 2) -> Sessions:
        """Sessions for one variant (CPU unless providers say otherwise); `providers` records what loaded."""
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        providers = providers or ["CPUExecutionProvider"]
        sess = [ort.InferenceSession(str(p), sess_options=opts, providers=providers) for p in variant_files(bundle, variant)]
        return cls(*sess, providers=sess[0].get_providers())


class GreedyDecoder:
    """NeMo's greedy TDT / RNNT rule over the three sessions (durations empty: RNNT)."""

    def __init__(self, sessions: Sessions, vocab_size: int, durations: list[int], max_symbols: int = 10):
        self.s = sessions
        self.blank = vocab_size
        self.durations = list(durations)
        self.max_symbols = max_symbols
        dec_inputs = self.s.decoder.get_inputs()
        self._dec_names = [i.name for i in dec_inputs]
        self._state_shapes = [i.shape for i in dec_inputs[2:]]
        self._enc_names = [i.name for i in self.s.encoder.get_inputs()]
        self._join_names = [i.name for i in self.s.joiner.get_inputs()]

    @classmethod
    def for_spec(cls, sessions: Sessions, spec) -> GreedyDecoder:
        """The decoder the model's family decodes with: TDT's duration rule, or RNNT's."""
        return cls(sessions, spec.vocab_size, list(spec.durations) if spec.family.tdt else [])

    def encode(self, features: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Encoder output [B, D, T'] and its lengths."""
        out = self.s.encoder.run(None, {self._enc_names[0]: features.astype(np.float32),
                                       self._enc_names[1]: lengths.astype(np.int64)})
        return out[0], out[1]

    def zero_state(self, layers: int, hidden: int) -> list[np.ndarray]:
        """The prediction net's initial LSTM state (h, c)."""
        return [np.zeros((layers, 1, hidden), dtype=np.float32) for _ in range(2)]

    def predict(self, token: int, state: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One prediction-net step: its output and the state after `token`."""
        out = self.s.decoder.run(None, {
            self._dec_names[0]: np.array([[token]], dtype=np.int32),
            self._dec_names[1]: np.array([1], dtype=np.int32),
            self._dec_names[2]: state[0],
            self._dec_names[3]: state[1],
        })
        return out[0], [out[2], out[3]]

    def joint(self, enc_frame: np.ndarray, dec_out: np.ndarray) -> np.ndarray:
        """The joiner's raw logits for one encoder frame and one prediction-net output."""
        return self.s.joiner.run(None, {self._join_names[0]: enc_frame, self._join_names[1]: dec_out})[0]

    def decode_encoded(self, enc: np.ndarray, length: int, layers: int, hidden: int) -> list[int]:
        """enc: [1, D, T'] for one utterance."""
        return self.path(enc, length, layers, hidden)[0]

    def path(self, enc: np.ndarray, length: int, layers: int, hidden: int, keep_logits: bool = False,
             rule: str = "nemo") -> tuple[list[int], list[tuple[int, int, int]], list[np.ndarray]]:
        """The greedy decode of one utterance step by step (greedy_path), by NeMo's rule or sherpa-onnx's."""
        return greedy_path(lambda t, g: self.joint(enc[:, :, t : t + 1], g).reshape(-1), self.predict,
                           self.zero_state(layers, hidden), length, self.blank, self.durations, self.max_symbols,
                           keep_logits, rule)

    def partings(self, enc: np.ndarray, length: int, layers: int, hidden: int, tokens: list[int],
                 frames: list[int]) -> list[Divergence]:
        """Where sherpa-onnx's greedy rule over these graphs parts from sherpa-onnx's output (sherpa_partings)."""
        return sherpa_partings(lambda t, g: self.joint(enc[:, :, t : t + 1], g).reshape(-1), self.predict,
                               self.zero_state(layers, hidden), length, self.blank, tokens, frames,
                               bool(self.durations), self.max_symbols)

    def follow(self, enc: np.ndarray, layers: int, hidden: int, steps: np.ndarray) -> list[np.ndarray]:
        """The joiner's logits along another decoder's path (teacher forcing, follow_path)."""
        return follow_path(lambda t, g: self.joint(enc[:, :, t : t + 1], g).reshape(-1), self.predict,
                           self.zero_state(layers, hidden), steps, self.blank)

    def decode_features(self, features: np.ndarray, layers: int, hidden: int) -> list[int]:
        """features: [1, C, T] (NeMo-normalized)."""
        enc, enc_len = self.encode(features, np.array([features.shape[2]], dtype=np.int64))
        return self.decode_encoded(enc, int(enc_len[0]), layers, hidden)


Step = tuple[int, int, int]  # (frame, token, duration index; -1 for RNNT): one decision of the greedy rule


def greedy_path(joint: Callable[[int, Any], np.ndarray], predict: Callable[[int, Any], tuple[Any, Any]], state: Any,
                length: int, blank: int, durations: list[int], max_symbols: int = 10,
                keep_logits: bool = False, rule: str = "nemo") -> tuple[list[int], list[Step], list[np.ndarray]]:
    """NeMo's greedy TDT / RNNT rule (rule "nemo"), or sherpa-onnx's ("sherpa-onnx": see _sherpa_tdt_path; for
    RNNT the two are the same), over any implementation of the joint and the prediction net (ONNX sessions here,
    NeMo's PyTorch modules at export): the tokens, every decision on the way, and (keep_logits) the joint's logits
    at each decision. joint(t, dec_out) -> logits over vocab + blank (+ durations); predict(token, state) ->
    (dec_out, state)."""
    if rule == "sherpa-onnx" and durations:
        return _sherpa_tdt_path(joint, predict, state, length, blank, keep_logits)
    hyp: list[int] = []
    steps: list[Step] = []
    logits_kept: list[np.ndarray] = []
    dec_out, new_state = predict(blank, state)
    v1 = blank + 1
    t = 0
    while t < length:
        symbols, need_loop = 0, True
        while need_loop and symbols < max_symbols:
            logits = np.asarray(joint(t, dec_out)).reshape(-1)
            k = int(np.argmax(logits[:v1]))
            d = int(np.argmax(logits[v1:])) if durations else -1
            skip = durations[d] if durations else (0 if k != blank else 1)
            steps.append((t, k, d))
            if keep_logits:
                logits_kept.append(logits.astype(np.float32))
            if k != blank:
                hyp.append(k)
                state = new_state
                dec_out, new_state = predict(k, state)
            symbols += 1
            t += skip
            need_loop = skip == 0
        if symbols == max_symbols and (durations or need_loop):
            t += 1  # NeMo's TDT rule advances after max_symbols whatever the last skip was
    return hyp, steps, logits_kept


SHERPA_TDT_MAX_TOKENS = 5  # sherpa-onnx's TDT greedy: tokens per frame before it forces a skip of 1


def _sherpa_tdt_path(joint: Callable[[int, Any], np.ndarray], predict: Callable[[int, Any], tuple[Any, Any]],
                     state: Any, length: int, blank: int,
                     keep_logits: bool) -> tuple[list[int], list[Step], list[np.ndarray]]:
    """sherpa-onnx's greedy TDT rule (offline-transducer-greedy-search-nemo-decoder.cc, DecodeOneTDT): skip = the
    best duration's index; at most 5 tokens on a frame, then a skip of 1; blank with skip 0 skips 1. NeMo's rule
    allows 10 symbols a frame: the two part only on a model that emits more than 5 tokens on one frame."""
    hyp: list[int] = []
    steps: list[Step] = []
    kept: list[np.ndarray] = []
    dec_out, new_state = predict(blank, state)
    v1, t, on_frame = blank + 1, 0, 0
    while t < length:
        logits = np.asarray(joint(t, dec_out)).reshape(-1)
        k, skip = int(np.argmax(logits[:v1])), int(np.argmax(logits[v1:]))
        steps.append((t, k, skip))
        if keep_logits:
            kept.append(logits.astype(np.float32))
        if k != blank:
            hyp.append(k)
            state = new_state
            dec_out, new_state = predict(k, state)
            on_frame += 1
        if skip > 0:
            on_frame = 0
        if on_frame >= SHERPA_TDT_MAX_TOKENS or (k == blank and skip == 0):
            on_frame, skip = 0, 1
        t += skip
    return hyp, steps, kept


def sherpa_partings(joint: Callable[[int, Any], np.ndarray], predict: Callable[[int, Any], tuple[Any, Any]],
                    state: Any, length: int, blank: int, tokens: list[int], frames: list[int], tdt: bool = True,
                    max_symbols: int = 10) -> list[Divergence]:
    """sherpa-onnx's greedy TDT rule (_sherpa_tdt_path) run beside sherpa-onnx's own output (its tokens and the frame
    of each) and resynchronized on sherpa-onnx's token at every parting, so one near-tie early in a long recording
    leaves the rest of it checked: every parting in order (first_divergence over the steps since the last
    resynchronization, `token_index` counting sherpa-onnx's tokens), [] when the two agree throughout. At a parting
    the path takes sherpa-onnx's token at its frame, with the duration its own logits there choose (sherpa-onnx's
    are the same logits), as sherpa-onnx's rule would go on from it. RNNT (`tdt` False): a token stays on its frame
    (at most `max_symbols`), a blank moves on one, as greedy_path's rule for it."""
    partings: list[Divergence] = []
    cap = SHERPA_TDT_MAX_TOKENS if tdt else max_symbols
    dec_out, new_state = predict(blank, state)
    v1, t, on_frame, j, n = blank + 1, 0, 0, 0, len(tokens)
    seg_steps: list[Step] = []
    seg_logits: list[np.ndarray] = []
    seg_j = 0
    while True:
        logits = np.asarray(joint(t, dec_out)).reshape(-1).astype(np.float32) if t < length else None
        k = int(np.argmax(logits[:v1])) if logits is not None else blank
        skip = _skip(logits, k, v1, blank, tdt) if logits is not None else 1
        if logits is not None:
            seg_steps.append((t, k, skip))
            seg_logits.append(logits)
        missed = j < n and frames[j] < t  # the path passed sherpa-onnx's next emission
        wrong = logits is not None and k != blank and (j >= n or (k, t) != (tokens[j], frames[j]))
        if missed or wrong or (logits is None and j < n):
            div = first_divergence(seg_steps, seg_logits, tokens[seg_j:], frames[seg_j:], blank)
            div = div or Divergence(token_index=0, step=None, frame=t, choice=None, path=k, other=None, margin=None,
                                    scale=None)
            partings.append(replace(div, token_index=div.token_index + seg_j))
            if j >= n or frames[j] >= length:
                break
            t = frames[j]  # resynchronize on sherpa-onnx's token j at its frame
            logits = np.asarray(joint(t, dec_out)).reshape(-1).astype(np.float32)
            k = tokens[j]
            skip = _skip(logits, k, v1, blank, tdt)
            on_frame = sum(1 for f in frames[:j] if f == t)
            seg_steps, seg_logits, seg_j = [(t, k, skip)], [logits], j
        elif logits is None:
            break
        if k != blank:
            state = new_state
            dec_out, new_state = predict(k, state)
            on_frame, j = on_frame + 1, j + 1
        if skip > 0:
            on_frame = 0
        if on_frame >= cap or (k == blank and skip == 0):
            on_frame, skip = 0, 1
        t += skip
    return partings


def _skip(logits: np.ndarray, k: int, v1: int, blank: int, tdt: bool) -> int:
    """How far a step moves: TDT, the best duration's index; RNNT, none after a token, one after a blank."""
    return int(np.argmax(logits[v1:])) if tdt else (0 if k != blank else 1)


def follow_path(joint: Callable[[int, Any], np.ndarray], predict: Callable[[int, Any], tuple[Any, Any]], state: Any,
                steps: np.ndarray, blank: int) -> list[np.ndarray]:
    """The joint's logits at each decision of a recorded path (greedy_path's steps), the prediction net fed the
    path's own tokens: both decoders see the same frame and the same history at every step."""
    out = []
    dec_out, new_state = predict(blank, state)
    for t, k, _ in np.asarray(steps).tolist():
        out.append(np.asarray(joint(int(t), dec_out)).reshape(-1))
        if k != blank:
            state = new_state
            dec_out, new_state = predict(int(k), state)
    return out


def first_divergence(steps: list[Step], logits: list[np.ndarray], tokens: list[int], frames: list[int],
                     blank: int) -> Divergence | None:
    """Where a recorded greedy path (greedy_path with keep_logits) first parts from another decoder's output, given
    as tokens and the frame of each: None if they agree. The other decoder's choices between two emissions are not
    seen, so every choice that explains the parting is weighed in the path's own logits and the closest is named
    (`margin`: the path's choice minus the other's logit there; a float tie when tiny): the token (or blank) at the
    frame where they part, or a duration since the last token they agree on that would have landed elsewhere."""
    emitted = [(n, t, k) for n, (t, k, _) in enumerate(steps) if k != blank]
    j = next((j for j, ((_, t, k), (k2, t2)) in enumerate(zip(emitted, zip(tokens, frames))) if (k, t) != (k2, t2)),
             None)
    if j is None:
        if len(emitted) == len(tokens):
            return None
        j = min(len(emitted), len(tokens))
    start = emitted[j - 1][0] if j else 0  # the last emission both made (its duration may be where they part)
    theirs = (tokens[j], frames[j]) if j < len(tokens) else (blank, None)
    for n in range(start if j else 0, len(steps)):
        t, k, _ = steps[n]
        other = theirs[0] if theirs[1] == t else blank  # at frame t the other emitted its token j, or nothing
        if other != k and n >= (start + 1 if j else 0):
            best = Divergence(token_index=j, step=n, frame=int(t), choice="token", path=int(k), other=int(other),
                              margin=float(logits[n][k] - logits[n][other]), scale=None)
            for alt in _duration_choices(steps, logits, start if j else 0, n, blank, theirs[1], j):
                if alt.margin < best.margin:
                    best = alt
            return replace(best, margin=float(f"{best.margin:.3g}"),
                           scale=float(f"{float(np.abs(logits[best.step]).max()):.3g}"))
    # The path passed the other's emission on blanks alone: a duration that would have landed there explains it.
    alts = _duration_choices(steps, logits, start if j else 0, len(steps), blank, theirs[1], j) \
        if theirs[1] is not None else []
    if alts:
        best = min(alts, key=lambda a: a.margin)
        return replace(best, margin=float(f"{best.margin:.3g}"),
                       scale=float(f"{float(np.abs(logits[best.step]).max()):.3g}"))
    return Divergence(token_index=j, step=None, frame=theirs[1], choice=None, path=None, other=theirs[0], margin=None,
                      scale=None)


def _duration_choices(steps: list[Step], logits: list[np.ndarray], first: int, last: int, blank: int,
                      target: int | None, token_index: int) -> list[Divergence]:
    """TDT duration choices at steps first..last-1 that land on another frame than the path's, no later than the
    other decoder's next emission (`target`): each with its margin in the path's logits."""
    out = []
    v1 = blank + 1
    for m in range(first, last):
        t, _, d = steps[m]
        durs = logits[m][v1:]
        if d < 0 or not len(durs):
            continue
        for alt in range(len(durs)):
            if alt != d and (target is None or t + alt <= target):
                out.append(Divergence(token_index=token_index, step=m, frame=int(t), choice="duration", path=int(d),
                                      other=alt, margin=float(durs[d] - durs[alt]), scale=None))
    return out
