"""Stage 2, export (NeMo venv): .nemo -> encoder.onnx, decoder.onnx, joiner.onnx, tokens.txt.

Uses each module's own `export()` (not the whole-model export, whose `decoder_joint` graph
sherpa-onnx cannot load). Before exporting, it records PyTorch reference tensors and NeMo's
greedy transcripts of the evaluation clips into `reference/`, so later stages never need NeMo.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, preflight
from .decode import first_divergence
from .audio import load_clips, read_wav
from .errors import InputError
from .modelspec import ModelSpec, read_nemo_config
from .variants import BASE, BPE_VOCAB, TOKENS

log = logging.getLogger("nemo2sherpa.export")

ENCODER_WEIGHTS = "encoder.weights"
# Frame counts that are not multiples of the subsampling factor, on purpose.
REFERENCE_FRAMES = (203, 157)
DECODER_STEPS = 4


def _load_model(nemo_path: Path):
    import torch

    from nemo.collections.asr.models import ASRModel

    torch.set_grad_enabled(False)
    model = ASRModel.restore_from(restore_path=str(nemo_path), map_location="cpu")
    model.eval()  # restore_from returns training mode
    cls = type(model).__name__
    if not (hasattr(model, "joint") and hasattr(model, "decoder") and hasattr(model.decoder, "predict")):
        raise InputError(f"{nemo_path}: {cls} is not a transducer (no RNNT decoder/joint); nothing to export")
    return model


def write_tokens(model, spec: ModelSpec, path: Path) -> int:
    """tokens.txt: `piece id` per line in id order, `<blk>` last; returns the line count."""
    vocab = list(getattr(model.joint, "vocabulary", None) or [])
    if len(vocab) != spec.vocab_size:
        tok = model.tokenizer
        vocab = [tok.ids_to_tokens([i])[0] for i in range(tok.vocab_size)]
    if len(vocab) != spec.vocab_size:
        raise InputError(f"tokenizer has {len(vocab)} tokens but the config says vocab_size={spec.vocab_size}")
    lines = []
    for i, piece in enumerate(vocab):
        piece = str(piece)
        if not piece or any(c.isspace() for c in piece):
            raise InputError(f"token {i} ({piece!r}) is empty or has white space: tokens.txt cannot hold it")
        lines.append(f"{piece} {i}")
    lines.append(f"<blk> {spec.vocab_size}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def write_bpe_vocab(model, spec: ModelSpec, path: Path) -> bool:
    """bpe.vocab for sherpa-onnx's hotwords: `piece<TAB>score` per SentencePiece id, in id order, the pieces those
    of tokens.txt (no <blk>: sherpa-onnx takes blank from tokens.txt). False, and no file, for a tokenizer that is
    not SentencePiece (its model cannot take bpe hotwords)."""
    sp = getattr(getattr(model, "tokenizer", None), "tokenizer", None)
    if not (hasattr(sp, "id_to_piece") and hasattr(sp, "get_score")):
        log.warning("the tokenizer is %s, not SentencePiece: no %s (sherpa-onnx's bpe hotwords need one)",
                    type(getattr(model, "tokenizer", None)).__name__, path.name)
        return False
    if sp.get_piece_size() != spec.vocab_size:
        raise InputError(f"the SentencePiece model has {sp.get_piece_size()} pieces but the config says vocab_size="
                         f"{spec.vocab_size}: the checkpoint's tokenizer does not belong to its model")
    lines = [f"{sp.id_to_piece(i)}\t{sp.get_score(i):.9g}" for i in range(spec.vocab_size)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return True


def _references(model, spec: ModelSpec, clips_dir: Path | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """PyTorch reference tensors of every module, and NeMo's features and transcripts of the evaluation clips."""
    import torch

    ref: dict[str, np.ndarray] = {}
    g = torch.Generator().manual_seed(0)
    # Encoder on a fixed random batch, odd frame counts, batch 2 with unequal lengths.
    T = max(REFERENCE_FRAMES)
    feats = torch.randn(len(REFERENCE_FRAMES), spec.feat_dim, T, generator=g)
    lens = torch.tensor(REFERENCE_FRAMES, dtype=torch.int64)
    enc, enc_len = model.encoder(audio_signal=feats, length=lens)
    ref["enc_in_features"], ref["enc_in_lengths"] = feats.numpy(), lens.numpy()
    ref["enc_out"], ref["enc_out_lengths"] = enc.numpy(), enc_len.numpy()

    # Decoder: blank (the start symbol) then a few tokens, one step at a time with state.
    tokens = [spec.blank_id] + [int(x) for x in torch.randint(0, spec.vocab_size, (DECODER_STEPS - 1,), generator=g)]
    state = None
    dec_outs, states_h, states_c = [], [], []
    for t in tokens:
        y = torch.tensor([[t]], dtype=torch.long)
        out, state = model.decoder.predict(y, state=state, add_sos=False, batch_size=1)
        dec_outs.append(out.transpose(1, 2).numpy())  # [1, H, 1]
        states_h.append(state[0].numpy())
        states_c.append(state[1].numpy())
    ref["dec_tokens"] = np.array(tokens, dtype=np.int32)
    ref["dec_out"] = np.concatenate(dec_outs, axis=0)  # [steps, H, 1]
    ref["dec_state_h"] = np.stack(states_h)
    ref["dec_state_c"] = np.stack(states_c)

    # Joiner on encoder frames x decoder outputs (raw logits: export turns log_softmax off).
    model.joint.log_softmax = False
    f = enc[:1, :, :5]  # [1, D, 5]
    dec = torch.from_numpy(ref["dec_out"][:, :, 0]).T.unsqueeze(0)  # [1, H, steps]
    logits = model.joint.joint(f.transpose(1, 2), dec.transpose(1, 2))  # [1, T, U, V']
    ref["joint_enc"], ref["joint_dec"], ref["joint_out"] = f.numpy(), dec.numpy(), logits.numpy()

    return ref, _clip_references(model, spec, clips_dir, ref)


def _clip_references(model, spec: ModelSpec, clips_dir: Path | None, ref: dict[str, np.ndarray]) -> dict[str, Any]:
    """NeMo's features, greedy tokens and transcripts of the evaluation clips (the decoding-parity reference), and
    the encoder on their features as one zero-padded batch (numeric parity on real input), added to `ref`."""
    import torch

    # Real clips: NeMo's own features and greedy decode (the decoding-parity reference).
    if spec.family.ctc_branch and getattr(model, "cur_decoder", "rnnt") != "rnnt":  # decode the transducer branch
        model.change_decoding_strategy(decoder_type="rnnt")
    info: dict[str, Any] = {"clips": []}
    clips = load_clips(clips_dir)
    # One clip at a time, as the exported graphs and sherpa-onnx decode: in a padded batch NeMo's own output can
    # part from its modules run on that clip alone at near-equal logits.
    hyps = model.transcribe([str(c.path) for c in clips], batch_size=1, return_hypotheses=True, verbose=False)
    if isinstance(hyps, tuple):  # older NeMo returned (best, all)
        hyps = hyps[0]
    model.eval()  # transcribe() leaves modules in training mode
    for i, (clip, hyp) in enumerate(zip(clips, hyps)):
        samples, rate = read_wav(clip.path)
        if rate != spec.sample_rate:
            raise InputError(f"{clip.path}: {rate} Hz, the model wants {spec.sample_rate} Hz")
        x = torch.from_numpy(samples).unsqueeze(0)
        feats_c, flen = model.preprocessor(input_signal=x, length=torch.tensor([x.shape[1]]))
        ref[f"clip{i}_features"] = feats_c.numpy()
        ref[f"clip{i}_tokens"] = np.asarray(hyp.y_sequence, dtype=np.int64).reshape(-1)
        tokens, steps, logits = torch_path(model, spec, feats_c)
        frames = [int(f) for f in hyp.timestamp] if _has_frames(hyp) else None
        ref.update(path_arrays(f"clip{i}_path", steps, logits, spec.blank_id + 1, spec.joiner_output_dim))
        info["clips"].append(
            {"name": clip.name, "path": str(clip.path), "text": clip.text, "nemo_text": hyp.text,
             "duration_s": round(len(samples) / rate, 3), "nemo_frames": frames,
             "nemo_tokens": [int(t) for t in ref[f"clip{i}_tokens"]], "frames": int(flen[0]),
             "path_steps": len(steps), "path_equals_transcribe": tokens == [int(t) for t in ref[f"clip{i}_tokens"]],
             "transcribe_divergence": (first_divergence(steps, logits, ref[f"clip{i}_tokens"].tolist(), frames,
                                                        spec.blank_id) if frames is not None else None)}
        )
    # The encoder on the real clips' features as one zero-padded batch (numeric parity on real, batched input): the
    # clips up to BATCH_MAX_S (a 60 s clip would pad every other to 60 s: at 1.1B, GBs for nothing); long clips are
    # held to NeMo one by one along its decoding path (validate's stepwise parity).
    every = [ref[f"clip{i}_features"].shape[2] for i in range(len(clips))]
    short = [i for i, n in enumerate(every) if n <= BATCH_MAX_S * 100] or [int(np.argmin(every))]
    lens = [every[i] for i in short]
    batch = np.zeros((len(short), spec.feat_dim, max(lens)), np.float32)
    for row, i in enumerate(short):
        batch[row, :, :every[i]] = ref[f"clip{i}_features"][0]
    enc_c, enc_c_len = model.encoder(audio_signal=torch.from_numpy(batch), length=torch.tensor(lens))
    ref["clips_enc_in"], ref["clips_enc_in_lengths"] = batch, np.asarray(lens, np.int64)
    ref["clips_enc_out"], ref["clips_enc_out_lengths"] = enc_c.numpy(), enc_c_len.numpy()
    return info


BATCH_MAX_S = 20  # clips up to this long go into the batched numeric-parity reference (100 feature frames a second)
PATH_TOP = 16  # token logits kept per decision: a flip to a token outside NeMo's 16 best is no tie


def path_arrays(key: str, steps: list, logits: list[np.ndarray], v1: int, width: int) -> dict[str, np.ndarray]:
    """A recorded path as reference arrays: the decisions (frame, token, duration index), and per decision NeMo's
    PATH_TOP best token logits (ids and values, best first) and every duration logit. Bounded: a 60 s clip of an
    8192-token model keeps ~2 MB, not the 50 MB of whole logit rows."""
    full = np.stack(logits) if logits else np.zeros((0, width), np.float32)
    top = np.argsort(-full[:, :v1], axis=1, kind="stable")[:, :PATH_TOP].astype(np.int32)
    return {key: np.asarray(steps, dtype=np.int32).reshape(-1, 3), f"{key}_top": top,
            f"{key}_topv": np.take_along_axis(full[:, :v1], top, axis=1), f"{key}_dur": full[:, v1:]}


def _has_frames(hyp) -> bool:
    """Whether NeMo's hypothesis gives the frame of every token (NeMo's greedy decoders fill `timestamp`)."""
    ts = getattr(hyp, "timestamp", None)
    try:
        return ts is not None and len(ts) == len(hyp.y_sequence)
    except TypeError:  # a dict of timestamps in some NeMo versions
        return False


def torch_path(model, spec: ModelSpec, features) -> tuple[list[int], list[tuple[int, int, int]], list[np.ndarray]]:
    """NeMo's own modules (PyTorch) decoding one clip's features by the greedy rule, every decision and the joint's
    raw logits there recorded: the path validate follows with the ONNX graphs (decode.greedy_path)."""
    import torch

    from .decode import greedy_path

    model.joint.log_softmax = False  # raw logits, as the exported joiner gives them
    enc, enc_len = model.encoder(audio_signal=features, length=torch.tensor([features.shape[2]]))

    def joint(t: int, g) -> np.ndarray:
        return model.joint.joint(enc[:, :, t : t + 1].transpose(1, 2), g).reshape(-1).numpy()

    def predict(token: int, state):
        return model.decoder.predict(torch.tensor([[token]]), state=state, add_sos=False, batch_size=1)

    durations = list(spec.durations) if spec.family.tdt else []
    return greedy_path(joint, predict, None, int(enc_len[0]), spec.blank_id, durations, keep_logits=True)


def _export_encoder(model, bundle: Path) -> list[str]:
    """Export the encoder; if it spilled into per-tensor files, merge them into encoder.weights."""
    import onnx

    tmp = bundle / ".encoder-export"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        model.encoder.export(str(tmp / "encoder.onnx"))
        spilled = [p for p in tmp.iterdir() if p.name != "encoder.onnx"]
        if spilled:
            log.info("encoder spilled into %d external tensor files; merging into %s", len(spilled), ENCODER_WEIGHTS)
            m = onnx.load(str(tmp / "encoder.onnx"), load_external_data=True)
            onnx.save_model(m, str(bundle / "encoder.onnx"), save_as_external_data=True,
                            all_tensors_to_one_file=True, location=ENCODER_WEIGHTS, size_threshold=1024)
            del m
        else:
            os.replace(tmp / "encoder.onnx", bundle / "encoder.onnx")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ["encoder.onnx"] + ([ENCODER_WEIGHTS] if (bundle / ENCODER_WEIGHTS).exists() else [])


def _export_files(model, spec: ModelSpec, bundle_dir: Path) -> tuple[list[str], int]:
    """encoder.onnx (+ encoder.weights), decoder.onnx, joiner.onnx by each module's own export, tokens.txt and
    bpe.vocab."""
    t0 = time.monotonic()
    files = _export_encoder(model, bundle_dir)
    log.info("encoder.onnx exported in %.1f s", time.monotonic() - t0)
    model.decoder.export(str(bundle_dir / "decoder.onnx"))
    model.joint.export(str(bundle_dir / "joiner.onnx"))
    files += ["decoder.onnx", "joiner.onnx", TOKENS]
    n_tokens = write_tokens(model, spec, bundle_dir / TOKENS)
    if write_bpe_vocab(model, spec, bundle_dir / BPE_VOCAB):
        files.append(BPE_VOCAB)
    return files, n_tokens


def nemo_baseline(model, lengths: list[float], runs: int = 3, threads: int = 2) -> dict[str, Any]:
    """What users would run without a conversion: NeMo's transcribe() (PyTorch, CPU), audio in, text out,
    on the first evaluation clip tiled to each length; p50/p95 after a warm-up call, like the benchmark stage."""
    import torch

    from .audio import fixed_length
    from .benchmark import time_calls

    speech, rate = read_wav(load_clips(None)[0].path)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    out: dict[str, Any] = {"engine": "NeMo transcribe (PyTorch)", "provider": "cpu", "variant": BASE.name,
                           "threads": threads, "by_length": {}}
    try:
        for secs in lengths:
            audio = fixed_length(speech, rate, secs)
            out["by_length"][f"{secs:g}"] = time_calls(
                lambda _: model.transcribe([audio], batch_size=1, verbose=False), runs, secs,
                prepare=model.eval)  # transcribe() leaves modules in training mode: untimed eval() before each
            log.info("NeMo baseline %5gs clip: p50 %.4f s", secs, out["by_length"][f"{secs:g}"]["p50_s"])
    finally:
        model.eval()
        torch.set_num_threads(old)
    return out


def summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """The export step's small manifest (XCom): the spec, parameter count, file sizes and timings."""
    return {k: manifest[k] for k in ("spec", "params", "files", "timings_s")}


def checked_spec(nemo_path: Path, out_dir: Path, expect: dict[str, Any] | None = None) -> ModelSpec:
    """The checkpoint's spec, refused before any work if sherpa-onnx cannot run it, if it does not match its
    registry entry (`expect`), or if `out_dir`'s disk or the memory cannot hold the export."""
    if not nemo_path.is_file():
        raise InputError(f"{nemo_path} does not exist: give the path of a .nemo file")
    cfg = read_nemo_config(nemo_path)  # also refuses unsafe archives before NeMo extracts it
    spec = ModelSpec.from_config(cfg)
    spec.check_sherpa_compatible()
    if expect:
        spec.check_expected(expect, f"{expect.get('repo_id', nemo_path.name)}")
    preflight.before_export(nemo_path, out_dir)
    log.info("model: %s, %d mels, vocab %d (+blank), durations %s, encoder %d x %d, prednet %d x %d",
             spec.model_class, spec.feat_dim, spec.vocab_size, list(spec.durations), spec.encoder_layers,
             spec.enc_hidden, spec.pred_rnn_layers, spec.pred_hidden)
    log.info("family: %s", spec.family.label)
    return spec


def export_nemo(nemo_path: Path, bundle_dir: Path, reference_dir: Path, clips_dir: Path | None = None,
                expect: dict[str, Any] | None = None, baseline_lengths: list[float] | None = None,
                eval_record: dict[str, Any] | None = None) -> dict[str, Any]:
    """Export one checkpoint. Returns the export manifest (also written to reference/export.json).

    `expect`: a registry entry whose figures the checkpoint's config must match (checked before NeMo loads).
    `baseline_lengths`: also time NeMo's own transcribe() at these clip lengths (the benchmark's baseline).
    `clips_dir` / `eval_record`: the evaluation set (evalset.prepare's folder and record; default the built-in clips).
    """
    nemo_path, bundle_dir, reference_dir = Path(nemo_path), Path(bundle_dir), Path(reference_dir)
    spec = checked_spec(nemo_path, bundle_dir.parent, expect)
    for d in (bundle_dir, reference_dir):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)

    t0 = time.monotonic()
    model = _load_model(nemo_path)
    params = sum(p.numel() for p in model.parameters())
    t_load = time.monotonic() - t0
    log.info("restored %s (%.1f M params) in %.1f s", spec.model_class, params / 1e6, t_load)

    t0 = time.monotonic()
    ref, info = _references(model, spec, clips_dir)
    np.savez(reference_dir / "reference.npz", **ref)
    t_ref = time.monotonic() - t0
    for c in info["clips"]:
        log.info("NeMo greedy %s: %r", c["name"], c["nemo_text"])
    t_base = 0.0
    if baseline_lengths:  # benchmark work, done here because NeMo is loaded here
        t0 = time.monotonic()
        info["nemo_baseline"] = nemo_baseline(model, [float(x) for x in baseline_lengths])
        t_base = time.monotonic() - t0

    t0 = time.monotonic()
    files, n_tokens = _export_files(model, spec, bundle_dir)
    t_export = time.monotonic() - t0

    stray = sorted(p.name for p in bundle_dir.iterdir() if p.name not in files)
    if stray:
        raise RuntimeError(f"export left unexpected files in {bundle_dir}: {stray[:5]}")
    sizes = {f: (bundle_dir / f).stat().st_size for f in files}
    manifest = {
        "nemo2sherpa": __version__,
        "nemo_path": str(nemo_path),
        "spec": spec.to_dict(),
        "params": params,
        "tokens": n_tokens,
        "files": sizes,
        **({"eval_set": {k: v for k, v in eval_record.items() if k != "dir"}} if eval_record else {}),
        "timings_s": {"restore": round(t_load, 2), "reference": round(t_ref, 2), "nemo_baseline": round(t_base, 2),
                      "export": round(t_export, 2)},
        **info,
    }
    (reference_dir / "export.json").write_text(json.dumps(manifest, indent=2))
    for f, s in sizes.items():
        log.info("%-16s %12s bytes", f, f"{s:,}")
    log.info("export done: restore %.1f s, references %.1f s, NeMo baseline timing %.1f s, export %.1f s", t_load,
             t_ref, t_base, t_export)
    return manifest
