"""Stage 3, validate (ONNX venv): prove the split bundle is sherpa-onnx-loadable and equals NeMo.

Gates, in order (each recorded with its value and threshold):
1. structure: onnx.checker, I/O dtypes/ranks, dims from the model config (feat_dim, decoder
   state and output dims, joiner output = vocab + 1 + durations, or vocab + 1 for RNNT), tokens.txt;
2. numeric parity, fp32: every module vs the PyTorch tensors saved at export (encoder on a random
   batch with odd frame counts and on the real clips' features as one padded batch), <= 1e-4;
3. decoding parity, fp32: along NeMo's own greedy path (recorded at export with NeMo's modules), the ONNX
   graphs make the same token and duration choice at every step, or the two best logits there are a float
   tie (within twice the logit difference measured at that step, and within TIE_MAX), recorded; the
   free-running greedy decode's token match with NeMo is reported;
4. int8 and fp16: the same decoder; token agreement with NeMo and WER against the fp32 text, each
   gated by its own WER-drift threshold in every clip-length bucket (< 30 s, 30-60 s, >= 60 s);
5. sherpa-onnx end to end (`full` mode, every variant, child process): decodes every clip; WER vs
   NeMo's transcripts gated by a loose threshold (its fbank differs from NeMo's), WER vs the
   reference texts reported; its tokens and timestamps equal the reference decoder's on sherpa-onnx's own
   features (frontend.py) on every clip, near-ties recorded; its timestamps against NeMo's reported;
   beam search and hotwords.
The runtime gates (sherpa-onnx's WER, a variant's drift, beam search's health) hold the clips the model knows
(known_clips: NeMo's WER on the clip's reference text <= 10%; every clip of a set without texts): on audio a
model does not know, NeMo's transcript is noise that another front end or int8 turns into other noise. The
step-by-step and own-features gates hold every clip, whatever the model knows.
TDT durations other than 0..N-1 (sherpa-onnx uses the duration index as the frame skip) are refused at export,
before any file is written, so no bundle reaches validate with them.
Metadata gates run in `full` mode, which also records the size and sha256 of every file it validated
(`files` in validation.json, hashed on a thread while the gates run): publish uploads exactly those
bytes or nothing. Any failed gate raises GateFailed after validation.json and
VALIDATION.md are written. The task log says the verdict first (each failed gate once, with its detail), then the
same report as VALIDATION.md.
"""

from __future__ import annotations

import json
import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .decode import GreedyDecoder, Sessions, ids_to_text, read_tokens
from .errors import GateFailed
from .child import KILLED, killed_for_memory, own_peak_rss
from .gates import DRIFT, GATES, LONG_RECORDING, SHERPA_WER, limits
from .hotwords import decoy_phrases
from .metadata import REQUIRED_KEYS, expected_metadata, read_metadata
from .modelspec import ModelSpec
from .progress import Phases
from .reference import Reference
from .positions import limit as positions_limit
from .records import (ClipRow, Decoding, Drift, Export, ExportClip, FileDigest, Frontend, FrontendClip, Gate,
                      LongAudio, LongRecording, MadeReport, ModelFigures, PerClip, PreValidation, SherpaRun, Source,
                      StepDiff, Stepwise, Timestamps, Validation, ValidationSummary, VariantResult)
from .source import sha256_file
from .report import figures, render_markdown
from .sherpa import check_in_subprocess
from .variants import BASE, BPE_VOCAB, SHARED, TOKENS, VARIANTS, base_first, variant_files, variant_paths

log = logging.getLogger("nemo2sherpa.validate")

# The variant registry's parity limits: fp32 <= 1e-4 vs PyTorch; int8 moves logits by ~1e-2, fp16 by ~1e-3, so
# theirs are reported and they are gated by WER drift instead.
FP32_TOL = BASE.parity_tol
# Where ONNX and NeMo choose differently at a step of NeMo's path, the difference is a float tie only if NeMo's two
# best logits there are closer than twice the largest logit difference measured at that step (only then can the
# order flip) and closer than this: ten times the parity limit. Anything else fails, naming clip and step.
TIE_MAX = 10 * FP32_TOL
# NeMo's transcribe() and its own modules decoded step by step (the path above) may part where two logits are
# nearly equal (its batched label-looping decoder sums in another order): allowed within this share of the logits'
# scale at that step; a larger margin would mean the greedy rule followed here is not NeMo's.
NEMO_TIE_REL = 0.01
# sherpa-onnx (2.0.1) against the reference decoder on its own features: exact on audio a model knows (the trained
# fixtures' clips, 36 of 36 with noise), but on audio it does not know the two part at margins of up to 1.2% of the
# logits' scale (tiny TDT models, fp32 and int8; cause not found: not the features' window, normalization or
# padding, the decoder state, onnxruntime 1.28 against 1.32, nor threads). Allowed up to this share, the largest
# recorded; a wrong front end (normalize_type "") still fails it (tests/test_stages.py).
SHERPA_TIE_REL = 0.02
# The same on the long-recording gate's recording, where the reference decoder is resynchronized on sherpa-onnx's token
# at every parting: the trained tiny TDT model on 10 minutes of its own clips with pauses parts 57 (int8) and 78
# (fp32) times in ~1,760 tokens, the widest at 1.5% (int8) and 3.1% of the logits' scale (fp32, the next 1.9%):
# attention over 7,500 frames sums in another order in sherpa-onnx's onnxruntime build. Allowed up to this share.
LONG_TIE_REL = 0.05
# A clip NeMo transcribes within this WER of its reference text is one the model knows: the runtime gates hold
# those (known_clips). On audio the model does not know, NeMo's transcript is noise, and another front end or int8
# turns it into other noise; there the proof is the step-by-step and own-features gates, which hold every clip.
KNOWN_WER_MAX = 0.1


def word_error_rate(refs: list[str], hyps: list[str]) -> float:
    """Corpus WER (jiwer) over all clips; clips whose reference is empty count their insertions."""
    import jiwer

    n_ref = sum(len(r.split()) for r in refs)
    if n_ref == 0:
        return 0.0 if not any(h.split() for h in hyps) else 1.0
    o = jiwer.process_words([r if r.split() else "" for r in refs], [h if h.split() else "" for h in hyps])
    return round((o.substitutions + o.deletions + o.insertions) / n_ref, 4)


class Report:
    """The gates of one validation, in order. Logged once, at the end (_finish): the verdict, each failed gate with
    its value, threshold and detail, then the table of every gate; as each is decided, only at DEBUG."""

    def __init__(self) -> None:
        self.gates: list[Gate] = []

    def gate(self, name: str, ok: bool, value: Any = None, threshold: Any = None, detail: str = "") -> bool:
        """Record one gate (logged at DEBUG; the end summary says it); returns whether it passed."""
        self.gates.append(Gate(gate=name, passed=bool(ok), value=value, threshold=threshold, detail=detail))
        log.debug("%s: %s value=%s threshold=%s %s", name, "pass" if ok else "FAILED", value, threshold, detail)
        return ok

    @property
    def failed(self) -> list[Gate]:
        """The gates that failed."""
        return [g for g in self.gates if not g.passed]

    def log_verdict(self, mode: str) -> None:
        """The log's summary before its table: one verdict line, then one ERROR line for each failed gate (its value,
        threshold and detail; the table has no detail)."""
        failed = self.failed
        if not failed:
            log.info("validation PASSED (%s): %d gates, 0 failed", mode, len(self.gates))
            return
        log.error("validation FAILED (%s): %d gates, %d failed:", mode, len(self.gates), len(failed))
        for g in failed:
            log.error("  %s: value=%s threshold=%s%s", g.gate, g.value, g.threshold,
                      f" ({g.detail})" if g.detail else "")


def _dtype(t: str) -> str:
    return t.replace("tensor(", "").replace(")", "")


def check_structure(bundle: Path, variant: str, spec: ModelSpec, r: Report) -> GreedyDecoder | None:
    """Structure gates; returns the greedy decoder over the variant's sessions (for the parity gates) if all passed."""
    import onnx

    ok = True
    for p in variant_files(bundle, variant):
        if not p.exists():
            r.gate(f"{variant}: {p.name} present", False, detail="file missing")
            return None
        try:
            onnx.checker.check_model(str(p))
        except Exception as e:  # noqa: BLE001 - checker raises several types
            ok &= r.gate(f"{variant}: onnx.checker {p.name}", False, detail=str(e)[:300])
    sessions = Sessions.load(bundle, variant)
    enc, dec, join = sessions.encoder, sessions.decoder, sessions.joiner
    want = {
        "encoder": (enc, [("float", 3), ("int64", 1)], 2),
        "decoder": (dec, [("int32", 2), ("int32", 1), ("float", 3), ("float", 3)], 4),
        "joiner": (join, [("float", 3), ("float", 3)], 1),
    }
    for name, (s, ins, n_out) in want.items():
        got = [(_dtype(i.type), len(i.shape)) for i in s.get_inputs()]
        ok &= r.gate(f"{variant}: {name} inputs", got == ins, value=got, threshold=ins)
        ok &= r.gate(f"{variant}: {name} outputs", len(s.get_outputs()) == n_out, value=len(s.get_outputs()), threshold=n_out)
    feat = enc.get_inputs()[0].shape[1]
    ok &= r.gate(f"{variant}: encoder feat_dim", feat == spec.feat_dim, value=feat, threshold=spec.feat_dim)
    states = [i.shape for i in dec.get_inputs()[2:]]
    sdims = [(s[0], s[2]) for s in states]
    want_s = [(spec.pred_rnn_layers, spec.pred_hidden)] * 2
    ok &= r.gate(f"{variant}: decoder state dims", sdims == want_s, value=sdims, threshold=want_s)
    # Decoder and joiner output widths, measured by running them (the graph's dims may be symbolic).
    D = enc.get_outputs()[0].shape[1]
    D = D if isinstance(D, int) else spec.enc_hidden
    greedy = GreedyDecoder.for_spec(sessions, spec)
    try:
        H = int(greedy.predict(spec.blank_id, greedy.zero_state(spec.pred_rnn_layers, spec.pred_hidden))[0].shape[1])
    except Exception as e:  # noqa: BLE001 - a wrong state size fails inside onnxruntime
        r.gate(f"{variant}: decoder runs one step", False, detail=str(e)[:300])
        return None
    ok &= r.gate(f"{variant}: decoder output dim", H == spec.pred_hidden, value=H, threshold=spec.pred_hidden)
    try:
        out = greedy.joint(np.zeros((1, D, 1), np.float32), np.zeros((1, H, 1), np.float32))
    except Exception as e:  # noqa: BLE001 - a joiner from another model fails inside onnxruntime
        r.gate(f"{variant}: joiner runs on encoder {D} x decoder {H}", False, detail=str(e)[:300])
        return None
    want_v = spec.joiner_output_dim
    ok &= r.gate(f"{variant}: joiner output dim", out.shape[-1] == want_v, value=int(out.shape[-1]), threshold=want_v,
                 detail=spec.family.joiner_detail(spec.vocab_size, spec.durations))
    return greedy if ok else None


def check_tokens(bundle: Path, spec: ModelSpec, r: Report) -> bool:
    """tokens.txt gates: one line per id, <blk> last with the blank id."""
    lines = (bundle / TOKENS).read_text(encoding="utf-8").splitlines()
    ok = r.gate("tokens.txt count == vocab+1", len(lines) == spec.vocab_size + 1, value=len(lines),
                threshold=spec.vocab_size + 1)
    last = lines[-1].split() if lines else []
    ok &= r.gate("tokens.txt <blk> last", last == ["<blk>", str(spec.vocab_size)], value=" ".join(last),
                 threshold=f"<blk> {spec.vocab_size}")
    ids = [int(line.rsplit(" ", 1)[1]) for line in lines if " " in line]
    ok &= r.gate("tokens.txt ids 0..vocab", ids == list(range(len(lines))), value=f"{len(ids)} ids")
    return ok


def _encoder_parity(dec: GreedyDecoder, variant: str, r: Report, feats: np.ndarray, lens: np.ndarray,
                    want: np.ndarray, want_lens: np.ndarray, gate: str, what: str) -> tuple[float, float]:
    """The encoder on one zero-padded batch (one item at a time if the graph is batch-1): max abs diff and relative
    error (||got - want|| / ||want||) over each item's valid frames; the output lengths are a gate of their own."""
    try:
        enc, enc_len = dec.encode(feats, lens)
        batched = True
    except Exception:  # noqa: BLE001 - a batch-1 graph
        outs = [dec.encode(feats[i : i + 1], lens[i : i + 1]) for i in range(len(lens))]
        enc, enc_len, batched = np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs]), False
    r.gate(f"{variant}: {gate}", np.array_equal(enc_len, want_lens), value=enc_len.tolist(),
           threshold=want_lens.tolist(), detail=f"{what}, frames {lens.tolist()}, " + ("batch" if batched else "batch 1 only"))
    return encoder_errors(enc, want, want_lens)


def encoder_errors(got: np.ndarray, want: np.ndarray, lengths: np.ndarray) -> tuple[float, float]:
    """Max abs diff and relative error (||got - want|| / ||want||) of a batch of encoder outputs [B, D, T] over
    each item's valid frames."""
    delta = [got[i, :, : int(n)] - want[i, :, : int(n)] for i, n in enumerate(lengths)]
    ref_sq = sum(float(np.square(want[i, :, : int(n)], dtype=np.float64).sum()) for i, n in enumerate(lengths))
    rel = (sum(float(np.square(d, dtype=np.float64).sum()) for d in delta) / max(ref_sq, 1e-30)) ** 0.5
    return max(float(np.abs(d).max()) for d in delta), rel


def numeric_parity(dec: GreedyDecoder, variant: str, spec: ModelSpec, ref: Reference, r: Report,
                   tol: float | None) -> tuple[dict[str, float], float]:
    """Max abs diff of each module vs PyTorch, and the encoder's relative error on the real clips (on the random
    batch for a reference made without clips)."""
    # Encoder: a random batch of 2 with unequal odd frame counts, then the real clips' NeMo features.
    encoder, rel_err = _encoder_parity(dec, variant, r, ref.enc_in_features, ref.enc_in_lengths, ref.enc_out,
                                       ref.enc_out_lengths, "encoder lengths", "random features")
    on_clips = {}
    if ref.clips_enc_in is not None:
        on_clips["encoder_clips"], rel_err = _encoder_parity(dec, variant, r, ref.clips_enc_in,
                                                             ref.clips_enc_in_lengths, ref.clips_enc_out,
                                                             ref.clips_enc_out_lengths, "encoder lengths (clips)",
                                                             "real clips")
        encoder = max(encoder, *on_clips.values())
    # Decoder, step by step with state.
    state = dec.zero_state(spec.pred_rnn_layers, spec.pred_hidden)
    d = 0.0
    for i, tok in enumerate(ref.dec_tokens):
        out, state = dec.predict(int(tok), state)
        d = max(d, float(np.abs(out - ref.dec_out[i : i + 1]).max()),
                float(np.abs(state[0] - ref.dec_state_h[i]).max()), float(np.abs(state[1] - ref.dec_state_c[i]).max()))
    # Joiner on a T x U grid.
    joiner = float(np.abs(dec.joint(ref.joint_enc, ref.joint_dec) - ref.joint_out).max())
    diffs = {k: float(f"{v:.3g}") for k, v in {"encoder": encoder, **on_clips, "decoder": d, "joiner": joiner}.items()}
    for k in ("encoder", "decoder", "joiner"):
        r.gate(f"{variant}: {k} max abs diff", tol is None or diffs[k] <= tol, value=diffs[k], threshold=tol,
               detail="" if tol is not None else f"reported ({variant} is gated by WER drift)")
    return diffs, float(f"{rel_err:.3g}")


def encode_clips(dec: GreedyDecoder, ref: Reference) -> list[tuple[np.ndarray, int]]:
    """The variant's encoder on NeMo's features of each clip, one at a time: (output [1, D, T'], its length), run
    once for both decoding-parity checks."""
    out = []
    for clip in ref.clips:
        enc, enc_len = dec.encode(clip.features, np.array([clip.features.shape[2]], dtype=np.int64))
        out.append((enc, int(enc_len[0])))
    return out


def stepwise_parity(dec: GreedyDecoder, spec: ModelSpec, ref: Reference,
                    clips: list[ExportClip], encoded: list[tuple[np.ndarray, int]]) -> Stepwise | None:
    """ONNX along NeMo's own greedy path (teacher forcing: at every step both see the same encoder frame and the
    same token history; recorded at export by export.torch_path): each token and duration choice compared. A
    differing choice is a tie when NeMo's margin between its two best there is within twice the logit difference
    measured at that step and within TIE_MAX; every tie is recorded, anything else is a mismatch. None for a
    reference made without paths."""
    if any(c.path is None for c in ref.clips):
        return None
    v1, steps, max_delta = spec.blank_id + 1, 0, 0.0
    ties: list[StepDiff] = []
    mismatches: list[StepDiff] = []
    for i, c in enumerate(clips):
        enc = encoded[i][0]
        clip = ref.clips[i]
        path, top, topv, dur = clip.path, clip.path_top, clip.path_topv, clip.path_dur
        got_all = dec.follow(enc, spec.pred_rnn_layers, spec.pred_hidden, path)
        for n, (got, (t, k, d)) in enumerate(zip(got_all, path.tolist())):
            tok, durs = got[:v1], got[v1:]
            delta = float(max(np.abs(tok[top[n]] - topv[n]).max(), np.abs(durs - dur[n]).max() if len(durs) else 0))
            max_delta = max(max_delta, delta)
            for what, choice, chosen, margin in _differing(tok, durs, k, d, top[n], topv[n], dur[n]):
                rec = StepDiff(clip=c.name, step=n, frame=int(t), choice=what, nemo=int(choice), onnx=chosen,
                               margin=float(f"{margin:.3g}"), logit_diff=float(f"{delta:.3g}"))
                (ties if margin <= min(2 * delta, TIE_MAX) else mismatches).append(rec)
        steps += len(path)
    parted = [replace(c.transcribe_divergence, clip=c.name, last_frame=int(encoded[i][1]) - 1)
              for i, c in enumerate(clips) if c.transcribe_divergence]
    return Stepwise(steps=steps, ties=ties, mismatches=mismatches, max_logit_diff=float(f"{max_delta:.3g}"),
                    tie_max=TIE_MAX, clips=len(clips), transcribe_divergence=parted)


def _differing(tok: np.ndarray, durs: np.ndarray, k: int, d: int, top: np.ndarray, topv: np.ndarray,
               dur: np.ndarray) -> list[tuple[str, int, int, float]]:
    """The choices ONNX makes otherwise than NeMo at one step: (what, NeMo's, ONNX's, NeMo's margin between the two;
    for a token outside NeMo's kept best, the smallest the margin can be)."""
    out = []
    chosen = int(np.argmax(tok))
    if chosen != k:
        at = np.flatnonzero(top == chosen)
        out.append(("token", k, chosen, float(topv[0] - (topv[at[0]] if len(at) else topv[-1]))))
    if d >= 0 and len(durs):
        chosen_d = int(np.argmax(durs))
        if chosen_d != d:
            out.append(("duration", d, chosen_d, float(dur[d] - dur[chosen_d])))
    return out


def decoding_parity(dec: GreedyDecoder, spec: ModelSpec, ref: Reference, clips: list[ExportClip],
                    pieces: list[str], encoded: list[tuple[np.ndarray, int]]) -> Decoding:
    """The greedy decoder over the ONNX sessions on NeMo's features of every clip (encode_clips), free-running,
    against NeMo's token ids."""
    exact, total_tokens, agree = 0, 0, 0
    per_clip = []
    for i, c in enumerate(clips):
        hyp = dec.decode_encoded(*encoded[i], spec.pred_rnn_layers, spec.pred_hidden)
        want = ref.clips[i].tokens.tolist()
        same = hyp == want
        exact += same
        total_tokens += max(len(want), len(hyp))
        agree += sum(a == b for a, b in zip(hyp, want))
        per_clip.append(PerClip(clip=c.name, exact=same, text=ids_to_text(hyp, pieces), onnx_tokens=hyp))
    texts = [p.text for p in per_clip]
    return Decoding(clips=len(clips), exact_clips=exact,
                    token_match_rate=round(agree / total_tokens, 4) if total_tokens else 1.0,
                    wer_vs_nemo=word_error_rate([c.nemo_text for c in clips], texts),
                    wer_vs_reference=word_error_rate([c.text for c in clips], texts), per_clip=per_clip)


def check_bpe_vocab(bundle: Path, tokens: list[str], exported: bool, r: Report) -> bool:
    """bpe.vocab (what sherpa-onnx's hotwords read) against tokens.txt: the same pieces in the same order, no <blk>.
    A checkpoint whose tokenizer is not SentencePiece has none (export said so): recorded, nothing to gate."""
    from .hotwords import vocab_problems

    if not exported:
        log.info("no %s: the checkpoint's tokenizer is not SentencePiece (hotwords with modeling_unit bpe are not "
                 "available for it)", BPE_VOCAB)
        return False
    problems = vocab_problems(bundle, tokens)
    return r.gate(f"{BPE_VOCAB} pieces == tokens.txt", not problems, value="; ".join(problems) or f"{len(tokens)} "
                  "pieces in id order", threshold="tokens.txt's pieces, <blk> excepted",
                  detail="sherpa-onnx's hotwords split phrases with these pieces")


def check_metadata(bundle: Path, variant: str, spec: ModelSpec, source: Source | None, r: Report) -> bool:
    """Metadata gates on the variant's encoder: the keys sherpa-onnx needs, each equal to the spec's value."""
    enc = variant_files(bundle, variant)[0]
    meta = read_metadata(enc)
    want = expected_metadata(spec, source)
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    ok = r.gate(f"{variant}: metadata required keys", not missing, value=missing or "all present",
                threshold=list(REQUIRED_KEYS))
    for k in ("vocab_size", "subsampling_factor", "pred_rnn_layers", "pred_hidden", "feat_dim", "normalize_type"):
        ok &= r.gate(f"{variant}: metadata {k}", meta.get(k) == want[k], value=meta.get(k), threshold=want[k])
    has_tdt = "tdt" in meta.get("url", "")
    ok &= r.gate(f"{variant}: metadata url switches TDT", has_tdt == spec.is_tdt, value=meta.get("url"),
                 threshold="contains 'tdt'" if spec.is_tdt else "no 'tdt'")
    ok &= r.gate(f"{variant}: metadata normalize per_feature", meta.get("normalize_type") == "per_feature",
                 value=meta.get("normalize_type"), threshold="per_feature",
                 detail="sherpa-onnx implements only per_feature; anything else decodes garbage")
    return ok




def validate_bundle(bundle: Path, reference_dir: Path, variants: list[str], mode: str = "full",
                    source: Source | None = None, report_path: Path | None = None,
                    **given_limits: float | None) -> Validation:
    """mode: "pre" (after export: structure + parity) or "full" (after metadata: + metadata + sherpa-onnx).

    `given_limits`: the run's gate limits by param name (gates.GATES: int8_wer_max, ...; the others at their
    defaults). With `report_path`, writes validation.json there and VALIDATION.md beside it, passed or not.
    sherpa-onnx runs in a child process beside the in-process gates (one variant at a time); "full" reuses
    validate_export's fp32 results when the fp32 files are, byte for byte, the ones it validated.
    """
    bundle, reference_dir = Path(bundle), Path(reference_dir)
    lim = limits(given_limits)
    exp = Export.read(reference_dir)
    spec = exp.model_spec()
    ref = Reference.load(reference_dir)
    clips = exp.clips
    known = known_clips(clips)  # what the runtime gates hold, decided once
    r, phase = Report(), Phases(log, "validate phase ")
    result = _result_head(exp, mode, lim, clips, source, reference_dir, variants)
    result.known_clips = sorted(known)  # compat and package read it
    hashing = ThreadPoolExecutor(1, thread_name_prefix="sha256")
    base_digests = hashing.submit(file_digests, bundle, [BASE.name])
    other_digests = hashing.submit(file_digests, bundle, [v for v in variants if v != BASE.name], False)
    check_tokens(bundle, spec, r)
    pieces = read_tokens(bundle)
    hotwords = check_bpe_vocab(bundle, pieces[:-1], BPE_VOCAB in exp.files, r)
    ctx = _Context(bundle, spec, ref, clips, known, pieces, lim, r, phase, source)
    runtime = ThreadPoolExecutor(1, thread_name_prefix="sherpa-onnx") if mode == "full" else None
    decoy = decoy_phrases(bundle, [c.nemo_text for c in clips] + [c.text for c in clips]) \
        if hotwords else None
    pre = _pre_record(reference_dir, base_digests) if mode == "full" and BASE.name in variants else None
    wavs = [c.path for c in clips]
    scratch, long_wav, long_s = _long_recording_file(clips, lim[LONG_RECORDING.param] if runtime else None)
    for v in base_first(variants):
        # sherpa-onnx in child processes, one model at a time, beside the in-process gates: greedy search now, beam
        # search and hotwords once greedy is done (while its output is checked on sherpa-onnx's own features).
        greedy = runtime.submit(check_in_subprocess, bundle, v, wavs, None, ("greedy",)) if runtime else None
        result.variants[v], dec = _onnx_gates(ctx, v, result, pre if v == BASE.name else None)
        vr = result.variants[v]
        if greedy is not None:
            _sherpa_children(ctx, v, vr, dec, greedy, runtime.submit(check_in_subprocess, bundle, v, wavs, decoy,
                                                                     ("beam",)), hotwords)
        if long_wav and dec is not None:
            dec = None  # sherpa-onnx's child loads the model too: one copy in memory at a time (4.4 GB at 1.1B fp32)
            vr.long_recording = long_recording(ctx, v, long_wav, long_s)
    result.by_length = by_length(result, clips, known)
    result.long_audio = proven_long_audio(result.long_audio, result.variants)
    with phase("sha256 of every file (waited for)"):
        result.files = base_digests.result() + other_digests.result()
    hashing.shutdown()
    if runtime:
        runtime.shutdown()
    if scratch:
        scratch.cleanup()
    result.timings_s = phase.seconds
    if mode == "pre" and not r.failed and BASE.name in variants:
        _write_pre_record(reference_dir, result, r)
    return _finish(result, r, report_path)


@dataclass
class _Context:
    """What every variant's gates read: the bundle, the model, NeMo's reference, the clips, the run's limits."""

    bundle: Path
    spec: ModelSpec
    ref: Reference
    clips: list[ExportClip]
    known: set[str]
    pieces: list[str]
    lim: dict[str, float | None]
    r: Report
    phase: Phases
    source: Source | None


def _onnx_gates(ctx: _Context, v: str, result: Validation,
                pre: PreValidation | None) -> tuple[VariantResult, GreedyDecoder | None]:
    """Structure, numeric and decoding parity of one variant over its onnxruntime sessions (or, for fp32 given
    validate_export's record of the same bytes, its results and gates): its results, and the greedy decoder over the
    sessions."""
    if pre is not None:
        with ctx.phase(f"{v}: sessions (parity gates: validate_export's, the same bytes)"):
            for g in pre.gates:
                ctx.r.gate(g.gate, g.passed, g.value, g.threshold,
                           (g.detail + "; " if g.detail else "") + "held by validate_export on these bytes")
            return pre.variant, GreedyDecoder.for_spec(Sessions.load(ctx.bundle, v), ctx.spec)
    vr = VariantResult()
    with ctx.phase(f"{v}: structure, sessions"):
        dec = check_structure(ctx.bundle, v, ctx.spec, ctx.r)
    if dec is None:
        return vr, None
    with ctx.phase(f"{v}: numeric parity"):
        vr.max_abs_diff, vr.encoder_rel_err = numeric_parity(dec, v, ctx.spec, ctx.ref, ctx.r, VARIANTS[v].parity_tol)
    with ctx.phase(f"{v}: encoder on the clips, decoding parity"):
        encoded = encode_clips(dec, ctx.ref)
        vr.decoding = decoding_parity(dec, ctx.spec, ctx.ref, ctx.clips, ctx.pieces, encoded)
        vr.stepwise = stepwise_parity(dec, ctx.spec, ctx.ref, ctx.clips, encoded)
    base = result.variants.get(BASE.name)
    _decoding_gates(v, vr.decoding, vr.stepwise, base.decoding if base else None, ctx.lim, ctx.clips, ctx.known,
                    ctx.r)
    return vr, dec


def _long_recording_file(clips: list[ExportClip], seconds: float | None) -> tuple[Any, Path | None, float | None]:
    """The long-recording gate's recording (write_long_recording) in a scratch folder: the folder (cleanup() it),
    the wav and its length; (None, None, None) when the gate is off."""
    if not seconds:
        return None, None, None
    scratch = tempfile.TemporaryDirectory(prefix="long-recording-")
    wav = Path(scratch.name) / "long-recording.wav"
    return scratch, wav, write_long_recording(clips, seconds, wav)


def _sherpa_children(ctx: _Context, v: str, vr: VariantResult, dec: GreedyDecoder | None, greedy: Any, beam: Any,
                     hotwords: bool) -> None:
    """sherpa-onnx's gates on one variant from its children: greedy search (`greedy`, a future), its output checked
    on sherpa-onnx's own features while beam search and hotwords run (`beam`, started with it)."""
    with ctx.phase(f"{v}: sherpa-onnx greedy child (waited for)"):
        checks = _runs(greedy.result())
    _runtime_gates(ctx, v, vr, dec, checks)
    with ctx.phase(f"{v}: sherpa-onnx beam search child (waited for)"):
        checks.update(_runs(beam.result()))
    vr.sherpa_seconds = {k: {"load_s": x.load_s, "decode_s": x.decode_s} for k, x in checks.items()}
    if vr.sherpa.texts:
        vr.sherpa_beam = _beam_gates(v, ctx.clips, ctx.known, vr.sherpa.texts, checks, hotwords, ctx.r)


def _runs(checks: dict[str, Any]) -> dict[str, SherpaRun]:
    """The sherpa-onnx child's answers (sherpa.check_in_subprocess) as records."""
    return {k: SherpaRun.from_json(x, f"sherpa-onnx {k}") for k, x in checks.items()}


def _runtime_gates(ctx: _Context, v: str, vr: VariantResult, dec: GreedyDecoder | None,
                   checks: dict[str, SherpaRun]) -> None:
    """sherpa-onnx's greedy gates on one variant from its child's output: metadata, decoding (WER vs NeMo), its own
    front end against the reference decoder, timestamps."""
    vr.sherpa = _sherpa_gates(ctx.bundle, v, ctx.spec, ctx.source, ctx.clips, ctx.known,
                              ctx.lim[SHERPA_WER.param], ctx.r, checks["greedy"])
    if vr.sherpa.tokens and dec is not None:
        with ctx.phase(f"{v}: sherpa-onnx on its own features"):
            vr.sherpa_frontend = frontend_parity(dec, ctx.spec, ctx.clips, vr.sherpa, ctx.pieces, v, ctx.r)
        vr.timestamps = timestamp_agreement(ctx.spec, ctx.clips, vr.sherpa, ctx.pieces)


def _pre_record(reference_dir: Path, base_digests) -> PreValidation | None:
    """validate_export's fp32 record, when the fp32 files (and tokens) are byte for byte those it validated."""
    if not (Path(reference_dir) / PreValidation.FILE).exists():
        return None
    rec = PreValidation.read(reference_dir)
    now = {d.name: d.sha256 for d in base_digests.result()}
    if rec.files != now:
        log.info("the fp32 files changed since validate_export: every fp32 gate is held again")
        return None
    return rec


def _write_pre_record(reference_dir: Path, result: Validation, r: Report) -> None:
    """What a later full validation of the same bytes may reuse: the fp32 results, their gates, the files' sha256."""
    rec = PreValidation(files={d.name: d.sha256 for d in result.files or []}, variant=result.variants[BASE.name],
                        gates=[g for g in r.gates if g.gate.startswith(f"{BASE.name}: ")])
    Path(reference_dir, PreValidation.FILE).write_text(json.dumps(rec.to_json(), default=str))


def _result_head(exp: Export, mode: str, lim: dict[str, float | None], clips: list[ExportClip],
                 source: Source | None, reference_dir: Path, variants: list[str]) -> Validation:
    """validation.json before the gates: the model, the thresholds, the clips, the source, how variants were made."""
    made = {}
    for name in variants:  # how each made variant was made (int8: recipe, rewrite check, integer ops), if it says
        maker = VARIANTS[name].maker() if VARIANTS[name].module else None
        if maker is not None and maker.report and (reference_dir / maker.report).exists():
            made[name] = MadeReport.load(reference_dir / maker.report).recorded()
    return Validation(
        mode=mode, model=ModelFigures.from_json({k: exp.spec[k] for k in (
            "model_class", "feat_dim", "vocab_size", "durations", "pred_rnn_layers", "pred_hidden", "encoder_layers",
            "enc_hidden")}),
        thresholds={f"{BASE.name}_max_abs_diff": BASE.parity_tol, f"{BASE.name}_token_match": 1.0,
                    **{g.key: lim[g.param] for g in GATES}},
        clips=[ClipRow(clip=c.name, reference=c.text, nemo=c.nemo_text, duration_s=c.duration_s) for c in clips],
        source=source.identity(("kind", "name", "repo_id", "url", "revision", "sha256")) if source else None,
        eval_set=exp.eval_set, long_audio=_long_audio(exp, clips), made=made)


def _long_audio(exp: Export, clips: list[ExportClip]) -> LongAudio:
    """What the bundle says about long recordings: the positions export made, what bounds the length, and the
    longest clip the gates hold in sherpa-onnx (every clip is decoded by every variant, on sherpa-onnx's features
    too)."""
    longest = max(clips, key=lambda c: c.duration_s)
    return LongAudio(positions=exp.positions or "not recorded by export", limit=positions_limit(exp.positions),
                     longest_clip=longest.name, longest_proven_s=longest.duration_s,
                     longest_clip_s=longest.duration_s, attention=exp.attention)


def _decoding_gates(v: str, d: Decoding, sw: Stepwise | None, base: Decoding | None,
                    lim: dict[str, float | None], clips: list[ExportClip], known: set[str], r: Report) -> None:
    """fp32: NeMo's choices at every step of its path, ties explained (free-running token match reported). A made
    variant: its WER against fp32's text, within its drift limit."""
    exact = f"{d.exact_clips}/{d.clips} clips exact"
    if v == BASE.name and sw is None:  # a reference without NeMo's path: the free-running tokens, exactly
        r.gate(f"{v}: greedy tokens == NeMo", d.exact_clips == d.clips, value=d.token_match_rate, threshold=1.0,
               detail=exact)
        return
    if v == BASE.name:
        _transcribe_gate(v, sw, r)
        first = sw.mismatches[0] if sw.mismatches else None
        r.gate(f"{v}: greedy decoding == NeMo step by step", not sw.mismatches,
               value=f"{len(sw.mismatches)} mismatches, {len(sw.ties)} ties in {sw.steps} steps",
               threshold=f"0 mismatches (a tie: NeMo's margin <= 2 x the logit difference there and <= "
                         f"{sw.tie_max:g})",
               detail=(f"first mismatch: clip {first.clip} step {first.step} (frame {first.frame}): "
                       f"{first.choice} {first.onnx} vs NeMo's {first.nemo}, margin {first.margin}, logit "
                       f"difference {first.logit_diff}" if first else
                       f"free-running: token match {d.token_match_rate}, {exact}"))
        return
    log.info("%s: token match vs NeMo %.4f (%d/%d clips exact)", v, d.token_match_rate, d.exact_clips, d.clips)
    if base is None:
        r.gate(f"{v}: WER vs {BASE.name}", False,
               detail=f"{BASE.name} was not validated in this run: validate {BASE.name} too")
        return
    ref_texts, texts = [c.text for c in base.per_clip], [c.text for c in d.per_clip]
    d.wer_vs_base = word_error_rate(ref_texts, texts)

    def drift(ix: list[int]) -> float | None:
        return word_error_rate([ref_texts[i] for i in ix], [texts[i] for i in ix]) if ix else None

    # Drift grows with clip length (field reports: int8 Parakeet bundles degrade past ~20 s): gated in every length
    # bucket, on the clips the model knows there (known_clips); every clip's figure reported.
    d.wer_by_length = {label: Drift(clips=len(ix), wer=drift(ix), gated_clips=len(kx), wer_gated=drift(kx))
                       for label, ix in length_buckets(clips).items()
                       for kx in [[i for i in ix if clips[i].name in known]]}
    gated = [b.wer_gated for b in d.wer_by_length.values() if b.wer_gated is not None]
    limit = lim[DRIFT[v].param]
    r.gate(f"{v}: WER vs {BASE.name} (drift)", limit is None or all(w <= limit for w in gated),
           value="; ".join(f"{label}: {b.wer_gated} on {b.gated_clips} known clips" if b.gated_clips else
                           f"{label}: no clip the model knows ({b.wer} on {b.clips}, reported)"
                           for label, b in d.wer_by_length.items()),
           threshold=f"{limit} in every length bucket" if limit is not None else None,
           detail=f"{d.wer_vs_base} on all {len(clips)} clips; token match vs NeMo {d.token_match_rate}, {exact}")


LENGTH_BUCKETS = ((30.0, "< 30 s"), (60.0, "30-60 s"), (float("inf"), ">= 60 s"))  # (upper bound, label)


def length_buckets(clips: list[ExportClip]) -> dict[str, list[int]]:
    """The clips' indices by length (LENGTH_BUCKETS), in the buckets' order, only buckets that hold a clip."""
    found: dict[str, list[int]] = {}
    for i, c in enumerate(clips):
        found.setdefault(next(label for top, label in LENGTH_BUCKETS if c.duration_s < top), []).append(i)
    return {label: found[label] for _, label in LENGTH_BUCKETS if label in found}


def by_length(result: Validation, clips: list[ExportClip], known: set[str]) -> dict[str, dict[str, Any]]:
    """Per length bucket: its clips, NeMo's WER against the reference texts, each made variant's WER against fp32
    (what its drift gate holds in every bucket) and each variant's sherpa-onnx WER against NeMo."""
    per = result.variants
    out = {}
    for label, ix in length_buckets(clips).items():
        row: dict[str, Any] = {"clips": len(ix), "clips the model knows": sum(clips[i].name in known for i in ix),
                               "NeMo WER vs reference": word_error_rate(
            [clips[i].text for i in ix], [clips[i].nemo_text for i in ix])}
        for v, x in per.items():
            if x.decoding and label in (x.decoding.wer_by_length or {}):
                row[f"{v} WER vs {BASE.name}"] = x.decoding.wer_by_length[label].wer
        for v, x in per.items():
            if x.sherpa and len(x.sherpa.texts or []) == len(clips):
                row[f"{v} sherpa-onnx WER vs NeMo"] = word_error_rate([clips[i].nemo_text for i in ix],
                                                                 [x.sherpa.texts[i] for i in ix])
        out[label] = row
    return out


def frontend_parity(dec: GreedyDecoder, spec: ModelSpec, clips: list[ExportClip], sh: SherpaRun,
                    pieces: list[str], v: str, r: Report) -> Frontend:
    """sherpa-onnx proven on its own front end: the library's greedy decoder over the same graphs, fed the features
    sherpa-onnx computes (frontend.sherpa_features) and following sherpa-onnx's own greedy rule, must give
    sherpa-onnx's tokens at sherpa-onnx's frames (its timestamps) on every clip, whatever the audio, or part from
    them only at a near-tie (on_sherpa_features), recorded with the largest relative margin seen."""
    rows = [on_sherpa_features(dec, spec, c.path, c.name, ids, frames)
            for c, (ids, frames) in zip(clips, sherpa_ids_frames(sh, pieces, spec))]
    exact, ties = sum(x.exact for x in rows), sum(x.tie for x in rows)
    bad = [x for x in rows if not x.exact and not x.tie]
    r.gate(f"{v}: sherpa-onnx == reference decoder on its own features", not bad,
           value=f"{exact}/{len(rows)} clips exact (tokens and timestamps), {ties} parted first at a near-tie "
                 f"({sum(x.partings or 0 for x in rows)} partings in all, each resynchronized on sherpa-onnx's token: "
                 f"the widest {max((x.widest_rel for x in rows if x.widest_rel is not None), default=0):g} of the "
                 f"logits' scale, recorded)",
           threshold=f"every clip exact, or parted at a near-tie (margin <= {SHERPA_TIE_REL:g} x the logits' scale)",
           detail=(f"first: clip {bad[0].clip} token {bad[0].divergence.token_index} (frame "
                   f"{bad[0].divergence.frame}), margin {bad[0].divergence.margin}" if bad
                   else "sherpa-onnx's kaldi-native-fbank front end reproduced (frontend.py)"))
    rel = [x.divergence.margin / max(x.divergence.scale, 1e-12) for x in rows
           if x.divergence and x.divergence.margin is not None]
    return Frontend(clips=rows, exact=exact, ties=ties, failed=len(bad),
                    max_relative_margin=round(max(rel), 5) if rel else None, tie_rel=SHERPA_TIE_REL)


def on_sherpa_features(dec: GreedyDecoder, spec: ModelSpec, wav: Path, name: str, ids: list[int],
                       frames: list[int], tie_rel: float = SHERPA_TIE_REL, every: bool = False) -> FrontendClip:
    """One recording: the reference decoder on the features sherpa-onnx computes from it, following sherpa-onnx's
    greedy rule, against sherpa-onnx's tokens `ids` at its `frames`, resynchronized on sherpa-onnx's token at each
    parting (decode.sherpa_partings): exact, or parted at near-ties (neither side's logits being observable in the
    runtime: the margin there in the decoder's logits <= `tie_rel` of their scale): the first parting (a clip's
    gate), or `every` parting (the long-recording gate's). `divergence`: the first parting that is not a near-tie
    where that decides, else the first; every parting is counted, the widest recorded."""
    from .audio import read_wav
    from .frontend import sherpa_features

    samples, rate = read_wav(wav)
    feats = sherpa_features(samples, rate, spec.feat_dim)
    enc, enc_len = dec.encode(feats, np.array([feats.shape[2]], dtype=np.int64))
    partings = dec.partings(enc, int(enc_len[0]), spec.pred_rnn_layers, spec.pred_hidden, ids, frames)
    rel = [d.margin / max(d.scale, 1e-12) if d.margin is not None else float("inf") for d in partings]
    held = len(partings) if every else 1  # the partings the gate holds: every one, or the first
    wide = [d for d, x in zip(partings[:held], rel) if x > tie_rel]
    return FrontendClip(clip=name, exact=not partings, tie=bool(partings) and not wide,
                        divergence=(wide or partings or [None])[0], tokens=len(ids), partings=len(partings),
                        widest_rel=round(max(rel), 5) if rel and max(rel) != float("inf") else None)


def write_long_recording(clips: list[ExportClip], seconds: float, path: Path) -> float:
    """The long-recording gate's recording, written to `path`: the run's evaluation clips in turn, each followed by a
    pause (audio.with_pauses), at least `seconds` long; its length in seconds."""
    from .audio import read_wav, with_pauses, write_wav

    audio = [read_wav(c.path) for c in clips]
    rate = audio[0][1]
    if any(r != rate for _, r in audio):  # evalset writes every clip at the model's rate
        raise GateFailed(f"the evaluation clips have more than one sample rate: {sorted({r for _, r in audio})}")
    samples, _ = with_pauses([a for a, _ in audio], seconds, rate)
    write_wav(path, samples, rate)
    return round(len(samples) / rate, 2)


def long_recording(ctx: _Context, v: str, wav: Path, seconds: float) -> LongRecording:
    """The long-recording gate on one variant: sherpa-onnx decodes the whole recording at once in a process of its
    own (its peak memory measured there), then the reference decoder (the variant's sessions loaded once sherpa-onnx
    has let go of its copy) on sherpa-onnx's features must give its tokens at its frames, or part at a near-tie;
    NeMo never transcribes the recording. A sherpa-onnx killed for memory fails the gate as the machine's limit,
    naming the fix."""
    with ctx.phase(f"{v}: long recording ({seconds:g} s), sherpa-onnx child (waited for)"):
        sh = _runs(check_in_subprocess(ctx.bundle, v, [wav], None, ("greedy",)))["greedy"]
    agreement, error, reference_s = None, None, None
    if not sh.ok:
        error = (killed_for_memory("decoding it") + ": set long_recording_s lower (or none) or give the worker more "
                 "memory") if sh.exit_code in KILLED else f"exit {sh.exit_code}: {sh.error}"
    else:
        phase = f"{v}: long recording, reference decoder on sherpa-onnx's features"
        with ctx.phase(phase):
            (ids, frames), = sherpa_ids_frames(sh, ctx.pieces, ctx.spec)
            dec = GreedyDecoder.for_spec(Sessions.load(ctx.bundle, v), ctx.spec)
            agreement = on_sherpa_features(dec, ctx.spec, wav, wav.stem, ids, frames, LONG_TIE_REL, every=True)
        reference_s = round(ctx.phase.seconds[phase], 1)
    out = LongRecording(seconds=seconds, agreement=agreement, error=error, reference_s=reference_s,
                        sherpa_peak_gb=round(sh.peak_rss_bytes / 1e9, 2) if sh.peak_rss_bytes else None,
                        sherpa_load_s=sh.load_s, sherpa_decode_s=sh.decode_s,
                        validate_peak_gb=round(own_peak_rss() / 1e9, 2))
    div = agreement.divergence if agreement else None
    ctx.r.gate(f"{v}: sherpa-onnx == reference decoder on a {seconds / 60:.1f}-minute recording",
               out.held,
               value=error or (f"{agreement.tokens} tokens, exact" if agreement.exact else
                               f"{agreement.tokens} tokens, parted {agreement.partings} times, each resynchronized; "
                               f"{'first wide' if not agreement.tie else 'first'} at token {div.token_index} (frame "
                               f"{div.frame}), margin {div.margin} of {div.scale}"),
               threshold=f"exact, or parted only at near-ties (margin <= {LONG_TIE_REL:g} x the logits' scale)",
               detail=f"the evaluation clips in turn with pauses, decoded at once; sherpa-onnx peak RSS "
                      f"{out.sherpa_peak_gb} GB, decode {sh.decode_s} s; reference decoder {reference_s} s (validate's "
                      f"peak RSS so far {out.validate_peak_gb} GB)")
    return out


def proven_long_audio(a: LongAudio, variants: dict[str, VariantResult]) -> LongAudio:
    """LongAudio once every variant was decoded: sherpa-onnx's peak memory on the evaluation clips per variant; and,
    where the long-recording gate ran, its recording, the longest proven where every variant held it, and sherpa-onnx's
    peak memory on it per variant."""
    clips = {v: round(x.sherpa.peak_rss_bytes / 1e9, 2) for v, x in variants.items()
             if x.sherpa is not None and x.sherpa.peak_rss_bytes}
    a = replace(a, clips_peak_gb=clips or None)
    runs = {v: x.long_recording for v, x in variants.items() if x.long_recording is not None}
    if not runs:
        return a
    held = len(runs) == len(variants) and all(x.held for x in runs.values())
    seconds = next(iter(runs.values())).seconds
    longer = held and seconds > a.longest_proven_s
    return replace(a, recording_s=seconds, longest_proven_s=seconds if longer else a.longest_proven_s,
                   longest_clip=LongAudio.GATE if longer else a.longest_clip,
                   sherpa_peak_gb={v: x.sherpa_peak_gb for v, x in runs.items() if x.sherpa_peak_gb is not None})


def sherpa_ids_frames(sh: SherpaRun, pieces: list[str], spec: ModelSpec) -> list[tuple[list[int], list[int]]]:
    """sherpa-onnx's output per clip as token ids and encoder frames: its tokens are pieces with the word marker
    shown as a space, its timestamps seconds (a frame is 10 ms x the subsampling factor)."""
    index = {p: i for i, p in enumerate(pieces)}
    seconds_per_frame = 0.01 * spec.subsampling_factor
    return [([index.get("\u2581" + t[1:] if t.startswith(" ") else t, -1) for t in toks],
             [int(round(x / seconds_per_frame)) for x in stamps]) for toks, stamps in zip(sh.tokens, sh.timestamps)]


def timestamp_agreement(spec: ModelSpec, clips: list[ExportClip], sh: SherpaRun,
                        pieces: list[str]) -> Timestamps:
    """sherpa-onnx's token times against NeMo's own (transcribe()'s token frames) on the clips where both emit the
    same tokens: the offset per token, its mean (a bias a dictation app would see as the cursor running early or
    late), mean absolute and largest. Reported, not gated: the two runtimes compute different features, so a token
    may land a frame apart; sherpa-onnx's times are gated against the reference decoder on its own features."""
    seconds_per_frame = 0.01 * spec.subsampling_factor
    offsets, compared = [], []
    for c, (ids, frames) in zip(clips, sherpa_ids_frames(sh, pieces, spec)):
        if c.nemo_frames is None or ids != c.nemo_tokens or len(frames) != len(c.nemo_frames):
            continue
        compared.append(c.name)
        offsets += [(a - b) * seconds_per_frame for a, b in zip(frames, c.nemo_frames)]
    figures = dict(mean_offset_s=round(float(np.mean(offsets)), 4),
                   mean_abs_offset_s=round(float(np.mean(np.abs(offsets))), 4),
                   max_abs_offset_s=round(float(np.max(np.abs(offsets))), 4),
                   same_frame=round(float(np.mean(np.asarray(offsets) == 0)), 4)) if offsets else {}
    out = Timestamps(clips_compared=compared, tokens=len(offsets), seconds_per_frame=seconds_per_frame, **figures)
    log.info("timestamps vs NeMo: %d tokens on %d clips with the same tokens, mean offset %s s, mean |offset| %s s",
             len(offsets), len(compared), out.mean_offset_s, out.mean_abs_offset_s)
    return out


def _transcribe_gate(v: str, sw: Stepwise, r: Report) -> None:
    """NeMo's transcribe() against its own modules run step by step: the same tokens, or parted at a near-tie."""
    parted = sw.transcribe_divergence
    # At a clip's last encoder frame NeMo's label-looping decoder ends the utterance by its own bookkeeping: seen
    # emitting another token there than its modules' joint chooses (a random-weight 0.6b shape, 61 s clip, margin 5%
    # of the logits' scale, encoder output identical); recorded, not held against the conversion.
    wide = [d for d in parted if d.margin is not None and d.margin > NEMO_TIE_REL * max(d.scale, 1e-12)
            and d.frame < (d.last_frame if d.last_frame is not None else float("inf"))]
    r.gate(f"{v}: NeMo transcribe() == its modules step by step", not wide,
           value=f"{len(parted)} of {sw.clips} clips parted" + "".join(
               f"; {d.clip} at token {d.token_index} (frame {d.frame}), margin {d.margin} of {d.scale}"
               for d in parted[:3]),
           threshold=f"parted only at near-ties (margin <= {NEMO_TIE_REL:g} x the logits' scale) or at a clip's "
                     f"last frame",
           detail="NeMo's own decoder and its modules, not the ONNX graphs: the path the ONNX graphs are held to is "
                  "the modules'")


def _sherpa_gates(bundle: Path, v: str, spec: ModelSpec, source: Source | None, clips: list[ExportClip],
                  known: set[str], limit: float | None, r: Report, sh: SherpaRun) -> SherpaRun:
    """Metadata gates, then sherpa-onnx's greedy decoding of every clip (`sh`, from its child process: it exits the
    process on a bad bundle, and what it makes of one, an exit or garbage text, is worth showing in the report), its
    WER vs NeMo within `limit` on the clips the model knows."""
    check_metadata(bundle, v, spec, source, r)
    texts = sh.texts or []
    decoded = sh.ok and len(texts) == len(clips)
    r.gate(f"{v}: sherpa-onnx loads and decodes every clip", decoded,
           value=f"{len(texts)}/{len(clips)} clips" if sh.ok else f"exit {sh.exit_code}",
           threshold=f"{len(clips)}/{len(clips)}", detail=sh.error or "")
    if decoded:
        sh.wer_vs_nemo = word_error_rate([c.nemo_text for c in clips], texts)
        sh.wer_vs_reference = word_error_rate([c.text for c in clips], texts)
        # Gated on the clips the model knows (known_clips); the figures on every clip are reported.
        held = [i for i, c in enumerate(clips) if c.name in known]
        sh.gated_clips = [clips[i].name for i in held]
        sh.wer_vs_nemo_gated = word_error_rate([clips[i].nemo_text for i in held],
                                               [texts[i] for i in held]) if held else None
        r.gate(f"{v}: sherpa-onnx WER vs NeMo", limit is None or not held or sh.wer_vs_nemo_gated <= limit,
               value=(f"{sh.wer_vs_nemo_gated} on the {len(held)} clips the model knows" if held else
                      "not applicable: NeMo transcribes no clip of this set right"), threshold=limit,
               detail=f"on all {len(clips)} clips {sh.wer_vs_nemo}, vs reference texts {sh.wer_vs_reference} "
                      f"(sherpa-onnx's fbank front end differs from NeMo's)")
    return sh


def known_clips(clips: list[ExportClip]) -> set[str]:
    """The clips the runtime gates hold (sherpa-onnx's WER vs NeMo, a variant's drift, beam-search health): those
    whose reference text NeMo transcribes with a WER <= KNOWN_WER_MAX, where a difference from NeMo is the
    runtime's or the variant's fault and not the model's ignorance of the audio; every clip of a set without
    reference texts (nothing tells known audio from unknown there)."""
    if not any(c.text.split() for c in clips):
        return {c.name for c in clips}
    return {c.name for c in clips if c.text.split()
            and word_error_rate([c.text], [c.nemo_text]) <= KNOWN_WER_MAX}


def _beam_gates(v: str, clips: list[ExportClip], known: set[str], greedy: list[str], checks: dict[str, SherpaRun],
                hotwords: bool, r: Report) -> SherpaRun:
    """sherpa-onnx's modified beam search (what hotwords need) on every clip (`checks`, from its child process):
    none empty or collapsed, its WER vs greedy reported; then with a list of words nobody said (per stream, through
    bpe.vocab): it loads, and what it changes is reported."""
    from .hotwords import collapsed

    beam = checks["beam"]
    texts = beam.texts or []
    bad = [c.name for c, g, b in zip(clips, greedy, texts) if collapsed(g, b)]
    # Gated where the right transcript is known and NeMo gets it: there a collapse is the runtime's fault. On
    # audio a model does not know (random weights, another domain) beam and greedy legitimately differ: reported.
    ok = beam.ok and len(texts) == len(clips)
    beam.collapsed, beam.gated_clips = bad, sorted(known)
    beam.wer_vs_greedy = word_error_rate(greedy, texts) if ok else None
    gated_bad = [b for b in bad if b in known]
    r.gate(f"{v}: sherpa-onnx beam search: no clip empty or collapsed", ok and not gated_bad,
           value=f"{len(gated_bad)} of {len(known)} clips NeMo transcribes right" + (
               f": {', '.join(gated_bad)}" if gated_bad else "") if beam.ok else f"exit {beam.exit_code}",
           threshold="0", detail=f"sherpa-onnx {beam.runtime or '?'}; WER beam vs greedy "
           f"{beam.wer_vs_greedy}; collapsed on all clips: {', '.join(bad) or 'none'}" if ok else beam.error or "")
    if not hotwords:
        return beam
    hot = checks.get("hotwords") or SherpaRun(ok=False, error="not run")
    loaded = hot.ok and len(hot.texts or []) == len(clips)
    hot.changed = [c.name for c, a, b in zip(clips, texts, hot.texts or []) if a != b]
    r.gate(f"{v}: sherpa-onnx decodes with hotwords ({BPE_VOCAB})", loaded,
           value=f"{len(hot.texts or [])}/{len(clips)} clips" if hot.ok else f"exit {hot.exit_code}",
           threshold=f"{len(clips)}/{len(clips)}", detail=(f"a list of {len(hot.phrases or [])} words nobody "
                                                           f"said changed {len(hot.changed)} clips" if loaded
                                                           else hot.error or ""))
    beam.decoy_hotwords = {"phrases": hot.phrases, "changed": hot.changed, "texts": hot.texts, "ok": hot.ok,
                           "decode_s": hot.decode_s}
    return beam


def _finish(result: Validation, r: Report, report_path: Path | None) -> Validation:
    """Verdict, reports written and logged; GateFailed naming every failed gate."""
    result.gates = r.gates
    result.passed = not r.failed
    md = render_markdown(result)
    if report_path:
        Path(report_path).write_text(json.dumps(result.to_json(), indent=2, default=str))
        Path(report_path).with_name("VALIDATION.md").write_text(md)
    r.log_verdict(result.mode)
    for line in md.splitlines():
        log.info("%s", line)
    if r.failed:
        raise GateFailed("; ".join(f"{g.gate}: {g.value} (want {g.threshold}) {g.detail}".strip() for g in r.failed))
    return result


def summary(result: Validation) -> ValidationSummary:
    """The validate step's small manifest (XCom, the publish summary): verdict and headline figures per variant."""
    per = result.variants
    made: dict[str, str | None] = {}
    for v in VARIANTS.values():  # how a made variant was made, in one figure (int8: int8_recipe)
        if v.module:
            made.update(v.maker().headline(result.made.get(v.name)))
    return ValidationSummary(
        passed=result.passed, gates=len(result.gates or []), mode=result.mode, thresholds=result.thresholds,
        max_abs_diff={v: x.max_abs_diff for v, x in per.items()},
        encoder_rel_err={v: x.encoder_rel_err for v, x in per.items()}, made=made,
        token_match={v: x.decoding.token_match_rate if x.decoding else None for v, x in per.items()},
        wer_vs_base={v: x.decoding.wer_vs_base for v, x in per.items()
                     if x.decoding and x.decoding.wer_vs_base is not None},
        sherpa_wer_vs_nemo={v: x.sherpa.wer_vs_nemo for v, x in per.items() if x.sherpa},
        figures=[f.to_json() for f in figures(result)])  # gated apart from reported only (publish's log)


def file_digests(bundle: Path, variants: list[str], shared: bool = True) -> list[FileDigest]:
    """Name, size and sha256 of the shared files (tokens.txt, bpe.vocab; unless not `shared`) and every file of the
    given variants that exists."""
    paths = [Path(bundle) / n for n in SHARED if shared] + [p for v in variants for p in variant_paths(bundle, v)]
    return [FileDigest(name=p.name, size=p.stat().st_size, sha256=sha256_file(p)) for p in paths if p.exists()]
