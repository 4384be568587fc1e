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
import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from . import __version__, preflight
from .decode import first_divergence
from .audio import load_clips, read_wav
from .errors import InputError
from .modelspec import ModelSpec, read_nemo_config
from .localattn import describe as attention, exportable, parse as attention_context, use_local_attention
from .positions import compute_in_graph, describe
from .progress import Phases
from .records import Engine, EvalSet, Export, ExportClip, ExportSummary, Source
from .reference import ClipReference, Reference
from .registry import RegistryEntry
from .variants import BASE, BPE_VOCAB, TOKENS, WEIGHTS_SUFFIX, single_file_max

log = logging.getLogger("nemo2sherpa.export")

ENCODER_WEIGHTS = "encoder" + WEIGHTS_SUFFIX
# Frame counts that are not multiples of the subsampling factor, on purpose.
REFERENCE_FRAMES = (203, 157)
DECODER_STEPS = 4


def _load_model(nemo_path: Path, scratch: Path):
    """NeMo's restore_from, made fast and safe for an untrusted 4 GB checkpoint. The archive is unpacked by
    modelspec.unpack_nemo (checked members, kernel copies); the weights are read with torch.load(weights_only=True)
    (a pickle that calls anything is refused, whatever TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD says), memory-mapped, and
    become the model's parameters, which were not first filled with random values (no_weight_init); every parameter
    must be in the checkpoint (strict). Measured at 1.1B: 66 s with NeMo's own restore (24 s of it unpacking the archive in
    Python, 17 s drawing random initial weights, 13 s reading the pickle), 34 s now, 25 of them importing NeMo."""
    import torch

    from nemo.collections.asr.models import ASRModel
    from nemo.core.connectors.save_restore_connector import SaveRestoreConnector

    from .modelspec import unpack_nemo

    class Restore(SaveRestoreConnector):
        """NeMo's connector over a folder we unpacked, loading weights only, memory-mapped."""

        @staticmethod
        def _load_state_dict_from_disk(model_weights, map_location="cpu"):
            return weights_only_load(Path(model_weights), nemo_path, map_location)

        def load_instance_with_state_dict(self, instance, state_dict, strict):
            """Every parameter from the checkpoint (strict), the mapped tensors themselves (assign: no copy; measured
            at 1.1B, NeMo's transcribe() runs as fast on them, and restore takes 14 s less)."""
            instance.load_state_dict(state_dict, strict=True, assign=True)
            instance._set_model_restore_state(is_being_restored=False)

    torch.set_grad_enabled(False)
    unpack_nemo(nemo_path, scratch)
    connector = Restore()
    connector.model_extracted_dir = str(scratch)
    with no_weight_init():
        model = ASRModel.restore_from(restore_path=str(nemo_path), map_location="cpu",
                                      save_restore_connector=connector)
    model.eval()  # restore_from returns training mode
    cls = type(model).__name__
    if not (hasattr(model, "joint") and hasattr(model, "decoder") and hasattr(model.decoder, "predict")):
        raise InputError(f"{nemo_path}: {cls} is not a transducer (no RNNT decoder/joint); nothing to export")
    return model


def weights_only_load(path: Path, nemo_path: Path, map_location="cpu"):
    """A checkpoint's state dict by torch.load with weights_only=True, memory-mapped where the file allows it. A
    pickle that would run code (a callable, any class that is not a tensor or a plain container) is refused as bad
    input naming the file: loading it would run whatever it says on this worker."""
    import pickle

    import torch

    try:
        try:
            return torch.load(str(path), map_location=map_location, weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            return torch.load(str(path), map_location=map_location, weights_only=True)  # an old, non-zip format
    except pickle.UnpicklingError as e:
        raise InputError(f"{nemo_path.name}: {path.name} is not weights only ({str(e).splitlines()[0][:200]}): a "
                         f"checkpoint whose pickle calls code is refused, never loaded. Re-save it from a trusted "
                         f"copy (torch.save of the state dict) or obtain it from its publisher") from None


# The initialisers module constructors call; a restore overwrites every parameter from the checkpoint (strict), so
# drawing random values first is wasted time (17 s of kaiming_uniform_ at 1.1B).
_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                   "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
                   "sparse_")


@contextmanager
def no_weight_init() -> Iterator[None]:
    """torch.nn.init's initialisers as no-ops for the duration (parameters keep torch.empty's contents until the
    checkpoint's tensors replace them)."""
    import torch

    saved = {name: getattr(torch.nn.init, name) for name in _INIT_FUNCTIONS if hasattr(torch.nn.init, name)}
    for name in saved:
        setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, f in saved.items():
            setattr(torch.nn.init, name, f)


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


def _references(model, spec: ModelSpec, clips_dir: Path | None) -> tuple[Reference, list[ExportClip]]:
    """PyTorch reference tensors of every module, and NeMo's features and transcripts of the evaluation clips."""
    import torch

    g = torch.Generator().manual_seed(0)
    # Encoder on a fixed random batch, odd frame counts, batch 2 with unequal lengths.
    T = max(REFERENCE_FRAMES)
    feats = torch.randn(len(REFERENCE_FRAMES), spec.feat_dim, T, generator=g)
    lens = torch.tensor(REFERENCE_FRAMES, dtype=torch.int64)
    enc, enc_len = model.encoder(audio_signal=feats, length=lens)

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
    dec_out = np.concatenate(dec_outs, axis=0)  # [steps, H, 1]

    # Joiner on encoder frames x decoder outputs (raw logits: export turns log_softmax off).
    model.joint.log_softmax = False
    f = enc[:1, :, :5]  # [1, D, 5]
    dec = torch.from_numpy(dec_out[:, :, 0]).T.unsqueeze(0)  # [1, H, steps]
    logits = model.joint.joint(f.transpose(1, 2), dec.transpose(1, 2))  # [1, T, U, V']
    ref = Reference(enc_in_features=feats.numpy(), enc_in_lengths=lens.numpy(), enc_out=enc.numpy(),
                    enc_out_lengths=enc_len.numpy(), dec_tokens=np.array(tokens, dtype=np.int32), dec_out=dec_out,
                    dec_state_h=np.stack(states_h), dec_state_c=np.stack(states_c), joint_enc=f.numpy(),
                    joint_dec=dec.numpy(), joint_out=logits.numpy())
    return ref, _clip_references(model, spec, clips_dir, ref)


def _clip_references(model, spec: ModelSpec, clips_dir: Path | None, ref: Reference) -> list[ExportClip]:
    """NeMo's features, greedy tokens and transcripts of the evaluation clips (the decoding-parity reference), and
    the encoder on their features as one zero-padded batch (numeric parity on real input), added to `ref`."""
    import torch

    # Real clips: NeMo's own features and greedy decode (the decoding-parity reference).
    if spec.family.ctc_branch and getattr(model, "cur_decoder", "rnnt") != "rnnt":  # decode the transducer branch
        model.change_decoding_strategy(decoder_type="rnnt")
    out: list[ExportClip] = []
    clips = load_clips(clips_dir)
    for i, clip in enumerate(clips):
        samples, rate = read_wav(clip.path)
        if rate != spec.sample_rate:
            raise InputError(f"{clip.path}: {rate} Hz, the model wants {spec.sample_rate} Hz")
        x = torch.from_numpy(samples).unsqueeze(0)
        feats_c, flen = model.preprocessor(input_signal=x, length=torch.tensor([x.shape[1]]))
        feats_c = feats_c[:, :, : int(flen[0])]  # the valid frames (a config with pad_to pads past them)
        # One clip at a time, as the exported graphs and sherpa-onnx decode (in a padded batch NeMo's own output can
        # part from its modules run on that clip alone at near-equal logits). What transcribe() runs, with the
        # encoder run once for both: forward() (preprocessor, encoder; no augmentation in eval mode), then the
        # model's own decoding (its batched label-looping greedy decoder) on that encoder output.
        enc, enc_len = model.encoder(audio_signal=feats_c, length=flen)
        hyp = nemo_greedy(model, enc, enc_len)
        nemo_ids = np.asarray(hyp.y_sequence, dtype=np.int64).reshape(-1)
        tokens, steps, logits = torch_path(model, spec, enc, enc_len)
        frames = [int(f) for f in hyp.timestamp] if _has_frames(hyp) else None
        ref.clips.append(ClipReference(feats_c.numpy(), nemo_ids,
                                       *path_arrays(steps, logits, spec.blank_id + 1, spec.joiner_output_dim)))
        nemo_tokens = [int(t) for t in nemo_ids]
        out.append(ExportClip(
            name=clip.name, path=Path(clip.path), text=clip.text, nemo_text=hyp.text,
            duration_s=round(len(samples) / rate, 3), nemo_frames=frames, nemo_tokens=nemo_tokens,
            frames=int(flen[0]), path_steps=len(steps), path_equals_transcribe=tokens == nemo_tokens,
            transcribe_divergence=(first_divergence(steps, logits, nemo_tokens, frames, spec.blank_id)
                                   if frames is not None else None)))
    # The encoder on the real clips' features as one zero-padded batch (numeric parity on real, batched input): the
    # clips up to BATCH_MAX_S (a 60 s clip would pad every other to 60 s: at 1.1B, GBs for nothing); long clips are
    # held to NeMo one by one along its decoding path (validate's stepwise parity).
    every = [c.features.shape[2] for c in ref.clips]
    short = [i for i, n in enumerate(every) if n <= BATCH_MAX_S * 100] or [int(np.argmin(every))]
    lens = [every[i] for i in short]
    batch = np.zeros((len(short), spec.feat_dim, max(lens)), np.float32)
    for row, i in enumerate(short):
        batch[row, :, :every[i]] = ref.clips[i].features[0]
    enc_c, enc_c_len = model.encoder(audio_signal=torch.from_numpy(batch), length=torch.tensor(lens))
    ref.clips_enc_in, ref.clips_enc_in_lengths = batch, np.asarray(lens, np.int64)
    ref.clips_enc_out, ref.clips_enc_out_lengths = enc_c.numpy(), enc_c_len.numpy()
    return out


BATCH_MAX_S = 20  # clips up to this long go into the batched numeric-parity reference (100 feature frames a second)
PATH_TOP = 16  # token logits kept per decision: a flip to a token outside NeMo's 16 best is no tie


def path_arrays(steps: list, logits: list[np.ndarray], v1: int,
                width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A recorded path as reference arrays: the decisions (frame, token, duration index), and per decision NeMo's
    PATH_TOP best token logits (ids and values, best first) and every duration logit. Bounded: a 60 s clip of an
    8192-token model keeps ~2 MB, not the 50 MB of whole logit rows."""
    full = np.stack(logits) if logits else np.zeros((0, width), np.float32)
    top = np.argsort(-full[:, :v1], axis=1, kind="stable")[:, :PATH_TOP].astype(np.int32)
    return (np.asarray(steps, dtype=np.int32).reshape(-1, 3), top, np.take_along_axis(full[:, :v1], top, axis=1),
            full[:, v1:])


def _has_frames(hyp) -> bool:
    """Whether NeMo's hypothesis gives the frame of every token (NeMo's greedy decoders fill `timestamp`)."""
    ts = getattr(hyp, "timestamp", None)
    try:
        return ts is not None and len(ts) == len(hyp.y_sequence)
    except TypeError:  # a dict of timestamps in some NeMo versions
        return False


def nemo_greedy(model, enc, enc_len):
    """NeMo's own greedy decoding of one clip's encoder output: what transcribe() does after forward() (its
    _transcribe_output_processing), the hypothesis with tokens, text and token frames."""
    hyps = model.decoding.rnnt_decoder_predictions_tensor(enc, enc_len, return_hypotheses=True)
    if isinstance(hyps, tuple):  # older NeMo returned (best, all)
        hyps = hyps[0]
    return hyps[0]


def torch_path(model, spec: ModelSpec, enc, enc_len) -> tuple[list[int], list[tuple[int, int, int]], list[np.ndarray]]:
    """NeMo's own modules (PyTorch) decoding one clip's encoder output by the greedy rule, every decision and the
    joint's raw logits there recorded: the path validate follows with the ONNX graphs (decode.greedy_path)."""
    import torch

    from .decode import greedy_path

    model.joint.log_softmax = False  # raw logits, as the exported joiner gives them

    def joint(t: int, g) -> np.ndarray:
        return model.joint.joint(enc[:, :, t : t + 1].transpose(1, 2), g).reshape(-1).numpy()

    def predict(token: int, state):
        return model.decoder.predict(torch.tensor([[token]]), state=state, add_sos=False, batch_size=1)

    durations = list(spec.durations) if spec.family.tdt else []
    return greedy_path(joint, predict, None, int(enc_len[0]), spec.blank_id, durations, keep_logits=True)


def _export_encoder(model, bundle: Path) -> list[str]:
    """Export the encoder. Over the single-file limit (the 1.1B's 4.2 GB: NeMo's export spills one file per
    tensor), or when the test knob lowers that limit, its weights go to one encoder.weights beside it."""
    tmp = bundle / ".encoder-export"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        model.encoder.export(str(tmp / "encoder.onnx"))
        spilled = [p for p in tmp.iterdir() if p.name != "encoder.onnx"]
        if spilled or (tmp / "encoder.onnx").stat().st_size > single_file_max():
            t0 = time.monotonic()
            n = external_weights(tmp / "encoder.onnx", bundle / "encoder.onnx", ENCODER_WEIGHTS)
            log.info("encoder: %d tensors (%d spilled files) into one %s in %.1f s", n, len(spilled),
                     ENCODER_WEIGHTS, time.monotonic() - t0)
        else:
            os.replace(tmp / "encoder.onnx", bundle / "encoder.onnx")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ["encoder.onnx"] + ([ENCODER_WEIGHTS] if (bundle / ENCODER_WEIGHTS).exists() else [])


WEIGHTS_ALIGN = 4096  # tensor offsets in a .weights file: page-aligned, so onnxruntime can map them
INLINE_MAX = 1024  # tensors up to this many bytes stay in the graph (onnx's own default threshold)


def _attribute_tensors(graph) -> Iterator[Any]:
    """The tensors in a graph's node attributes (Constant values), subgraphs included."""
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from g.initializer
                yield from _attribute_tensors(g)


def _read_external(t, folder: Path) -> bytes:
    """The bytes of a tensor stored in a file beside its model."""
    from onnx.external_data_helper import ExternalDataInfo

    info = ExternalDataInfo(t)
    with open(folder / info.location, "rb") as f:
        f.seek(info.offset or 0)
        return f.read(info.length) if info.length else f.read()


def external_weights(src: Path, dst: Path, weights_name: str) -> int:
    """`src` (an .onnx whose tensors are inline or in files of their own beside it) as `dst` with its initializers
    over INLINE_MAX bytes in one `weights_name` file beside it, page-aligned; node attributes (Constant values) inline,
    as onnx's own save_as_external_data leaves them. Streams tensor by tensor (memory stays flat at 4 GB of weights)
    where onnx.load + save would hold the whole model; returns how many tensors went to the weights file."""
    import onnx
    from onnx import numpy_helper
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(src), load_external_data=False)
    for t in _attribute_tensors(model.graph):
        if uses_external_data(t):
            t.raw_data = _read_external(t, src.parent)
            del t.external_data[:]
            t.data_location = onnx.TensorProto.DEFAULT
    moved = 0
    with open(dst.parent / weights_name, "wb") as out:
        for t in model.graph.initializer:
            if t.data_type == onnx.TensorProto.STRING:
                continue  # strings cannot be external data
            if uses_external_data(t):
                data = _read_external(t, src.parent)
            elif t.HasField("raw_data") and len(t.raw_data) > INLINE_MAX:
                data = t.raw_data
            elif not t.HasField("raw_data") and numpy_helper.to_array(t).nbytes > INLINE_MAX:
                data = numpy_helper.to_array(t).tobytes()
            else:
                continue
            out.write(b"\0" * (-out.tell() % WEIGHTS_ALIGN))
            offset = out.tell()
            out.write(data)
            for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                t.ClearField(field)
            del t.external_data[:]
            for key, value in (("location", weights_name), ("offset", str(offset)), ("length", str(len(data)))):
                entry = t.external_data.add()
                entry.key, entry.value = key, value
            t.data_location = onnx.TensorProto.EXTERNAL
            moved += 1
    onnx.save_model(model, str(dst))
    return moved


def _export_files(model, spec: ModelSpec, bundle_dir: Path) -> tuple[list[str], int]:
    """encoder.onnx (+ encoder.weights), decoder.onnx, joiner.onnx by each module's own export, tokens.txt and
    bpe.vocab."""
    t0 = time.monotonic()
    compute_in_graph(model.encoder)  # no positional table in the graph: no length limit, bytes independent of clips
    if exportable(model.encoder):  # local attention's chunks and masks, out of place: the trace keeps them
        log.info("local attention: chunking and masking rebound to their out-of-place forms for export")
    files = _export_encoder(model, bundle_dir)
    log.info("encoder.onnx exported in %.1f s", time.monotonic() - t0)
    model.decoder.export(str(bundle_dir / "decoder.onnx"))
    model.joint.export(str(bundle_dir / "joiner.onnx"))
    files += ["decoder.onnx", "joiner.onnx", TOKENS]
    n_tokens = write_tokens(model, spec, bundle_dir / TOKENS)
    if write_bpe_vocab(model, spec, bundle_dir / BPE_VOCAB):
        files.append(BPE_VOCAB)
    return files, n_tokens


def nemo_baseline(model, lengths: list[float], runs: int = 3, threads: int = 2) -> Engine:
    """What users would run without a conversion: NeMo's transcribe() (PyTorch, CPU), audio in, text out,
    on the first evaluation clip tiled to each length; p50/p95 after a warm-up call, like the benchmark stage."""
    import torch

    from .audio import fixed_length
    from .benchmark import time_calls

    speech, rate = read_wav(load_clips(None)[0].path)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    by_length = {}
    try:
        for secs in lengths:
            audio = fixed_length(speech, rate, secs)
            by_length[f"{secs:g}"] = time_calls(
                lambda _: model.transcribe([audio], batch_size=1, verbose=False), runs, secs,
                prepare=model.eval)  # transcribe() leaves modules in training mode: untimed eval() before each
            log.info("NeMo baseline %5gs clip: p50 %.4f s", secs, by_length[f"{secs:g}"].p50_s)
    finally:
        model.eval()
        torch.set_num_threads(old)
    return Engine(engine="NeMo transcribe (PyTorch)", provider="cpu", variant=BASE.name, threads=threads,
                  by_length=by_length)


def summary(manifest: Export) -> ExportSummary:
    """The export step's small manifest (XCom): the spec, parameter count, file sizes and timings."""
    return ExportSummary(spec=manifest.spec, params=manifest.params, files=manifest.files,
                         timings_s=manifest.timings_s)


def checked_spec(nemo_path: Path, out_dir: Path, expect: RegistryEntry | None = None) -> ModelSpec:
    """The checkpoint's spec, refused before any work if sherpa-onnx cannot run it, if it does not match its
    registry entry (`expect`), or if `out_dir`'s disk or the memory cannot hold the export."""
    if not nemo_path.is_file():
        raise InputError(f"{nemo_path} does not exist: give the path of a .nemo file")
    cfg = read_nemo_config(nemo_path)  # also refuses unsafe archives before NeMo extracts it
    spec = ModelSpec.from_config(cfg)
    spec.check_sherpa_compatible()
    if expect:
        expect.check(spec)
    preflight.before_export(nemo_path, out_dir)
    log.info("model: %s, %d mels, vocab %d (+blank), durations %s, encoder %d x %d, prednet %d x %d",
             spec.model_class, spec.feat_dim, spec.vocab_size, list(spec.durations), spec.encoder_layers,
             spec.enc_hidden, spec.pred_rnn_layers, spec.pred_hidden)
    log.info("family: %s", spec.family.label)
    return spec


def _restore(nemo_path: Path, bundle_dir: Path, reference_dir: Path):
    """The NeMo model, unpacked in a scratch folder beside the bundle; a refused checkpoint leaves no output."""
    scratch = Path(tempfile.mkdtemp(prefix=".restore-", dir=bundle_dir.parent))
    try:
        return _load_model(nemo_path, scratch)
    except BaseException:
        for d in (bundle_dir, reference_dir):
            shutil.rmtree(d, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # the mapped weights stay readable until this process ends


def export_nemo(nemo_path: Path, bundle_dir: Path, reference_dir: Path, clips_dir: Path | None = None,
                expect: RegistryEntry | None = None, baseline_lengths: list[float] | None = None,
                eval_record: EvalSet | None = None, source: Source | None = None,
                local_attention: list[int] | None = None) -> Export:
    """Export one checkpoint. Returns the export manifest (also written to reference/export.json).

    `expect`: a registry entry whose figures the checkpoint's config must match (checked before NeMo loads).
    `baseline_lengths`: also time NeMo's own transcribe() at these clip lengths (the benchmark's baseline).
    `clips_dir` / `eval_record`: the evaluation set (evalset.prepare's folder and record; default the built-in clips).
    `source`: the source step's manifest: sherpa-onnx's metadata goes on encoder.onnx now, so the fp32 files
    validate_export holds are the bytes that get published (the metadata step leaves them as they are).
    `local_attention`: [left, right] encoder frames: the model switched to local attention (NeMo's own switch, before
    its transcripts and references, so every gate holds the bundle to NeMo with local attention; localattn).
    """
    nemo_path, bundle_dir, reference_dir = Path(nemo_path), Path(bundle_dir), Path(reference_dir)
    spec = checked_spec(nemo_path, bundle_dir.parent, expect)
    for d in (bundle_dir, reference_dir):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    phase = Phases(log, "export phase ",  # each phase names what remains: at 1.1B this step runs for minutes
                   planned=["restore", "reference", *(["nemo_baseline"] if baseline_lengths else []), "export"])
    with phase("restore"):
        model = _restore(nemo_path, bundle_dir, reference_dir)
    params = sum(p.numel() for p in model.parameters())
    log.info("restored %s (%.1f M params)", spec.model_class, params / 1e6)
    context = attention_context(local_attention)
    if context:
        use_local_attention(model, context)
    with phase("reference"):
        ref, clips = _references(model, spec, clips_dir)
        ref.save(reference_dir)
    for c in clips:
        log.info("NeMo greedy %s: %r", c.name, c.nemo_text)
    baseline = None
    if baseline_lengths:  # benchmark work, done here because NeMo is loaded here
        with phase("nemo_baseline"):
            baseline = nemo_baseline(model, [float(x) for x in baseline_lengths])
    with phase("export"):
        files, n_tokens = _export_files(model, spec, bundle_dir)
        if source:
            from .metadata import apply_metadata

            apply_metadata(bundle_dir, spec, source)
    stray = sorted(p.name for p in bundle_dir.iterdir() if p.name not in files)
    if stray:
        raise RuntimeError(f"export left unexpected files in {bundle_dir}: {stray[:5]}")
    sizes = {f: (bundle_dir / f).stat().st_size for f in files}
    manifest = Export(nemo2sherpa=__version__, nemo_path=str(nemo_path), spec=spec.to_dict(), params=params,
                      tokens=n_tokens, files=sizes, eval_set=replace(eval_record, dir=None) if eval_record else None,
                      timings_s={"nemo_baseline": 0.0, **phase.seconds}, clips=clips, nemo_baseline=baseline,
                      positions=describe(model.encoder), attention=attention(context))
    (reference_dir / Export.FILE).write_text(json.dumps(manifest.to_json(), indent=2))
    for f, s in sizes.items():
        log.info("%-16s %12s bytes", f, f"{s:,}")
    return manifest
