"""What a NeMo transducer checkpoint is, derived from its model config (never assumed).

Pure Python: usable in every stage venv. `ModelSpec.from_config` takes the dict of a .nemo's
`model_config.yaml`; export records the spec in `export.json` for the later stages.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import InputError

TRANSDUCER_CLASSES = {
    "EncDecRNNTBPEModel",
    "EncDecRNNTModel",
    "EncDecHybridRNNTCTCBPEModel",
    "EncDecHybridRNNTCTCModel",
}


@dataclass(frozen=True)
class Family:
    """A kind of NeMo transducer, with the rules that differ between kinds; every stage asks the spec's family.

    `tdt`: the joint also emits duration logits (joiner width vocab + blank + durations), greedy decoding takes
    the best duration as the frames to skip, and sherpa-onnx decodes TDT only when the encoder's `url` contains
    "tdt" (and must not otherwise). `ctc_branch`: a hybrid model; its transducer branch is what is exported and
    decoded (sherpa-onnx's NeMo transducer loader does not take the CTC head)."""

    name: str
    label: str
    tdt: bool
    ctc_branch: bool

    def joiner_output_dim(self, vocab_size: int, durations: tuple[int, ...]) -> int:
        """The joiner's output width: vocab + blank, + one logit per duration for TDT."""
        return vocab_size + 1 + (len(durations) if self.tdt else 0)

    def url(self, url: str) -> str:
        """The encoder's `url` metadata: contains "tdt" exactly when sherpa-onnx must decode TDT."""
        if self.tdt:
            return url if "tdt" in url else f"{url}#tdt"
        return url.replace("tdt", "t-d-t")  # an RNNT model whose name happens to contain "tdt"

    def decoding(self, durations: tuple[int, ...]) -> str:
        """How greedy decoding runs, in words (metadata comment, reports)."""
        return f"TDT durations {list(durations)}" if self.tdt else "RNNT"

    def joiner_detail(self, vocab_size: int, durations: tuple[int, ...]) -> str:
        """What the joiner's width is made of, for the structure gate."""
        return (f"vocab {vocab_size} + blank + {len(durations)} durations" if self.tdt
                else f"vocab {vocab_size} + blank (RNNT)")


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("tdt", "Token-and-Duration Transducer (Parakeet-TDT)", tdt=True, ctc_branch=False),
    Family("rnnt", "RNN-Transducer", tdt=False, ctc_branch=False),
    Family("hybrid-tdt-ctc", "hybrid TDT + CTC (its TDT branch is exported)", tdt=True, ctc_branch=True),
    Family("hybrid-rnnt-ctc", "hybrid RNNT + CTC (its RNNT branch is exported)", tdt=False, ctc_branch=True),
)}


def family_of(model_class: str, durations: tuple[int, ...]) -> Family:
    """The family a checkpoint's class and TDT durations make."""
    hybrid = "Hybrid" in model_class
    return FAMILIES[("hybrid-" if hybrid else "") + ("tdt" if durations else "rnnt") + ("-ctc" if hybrid else "")]


@dataclass(frozen=True)
class ModelSpec:
    """A transducer checkpoint's figures, each read from its model config; `family` holds the rules of its kind."""

    model_class: str
    feat_dim: int
    vocab_size: int  # without blank
    durations: tuple[int, ...]  # empty for plain RNNT
    pred_hidden: int
    pred_rnn_layers: int
    enc_hidden: int
    encoder_layers: int
    subsampling_factor: int
    normalize_type: str
    sample_rate: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> Family:
        """TDT, RNNT, or a hybrid of either with CTC: the rules that differ between them."""
        return family_of(self.model_class, self.durations)

    @property
    def hybrid(self) -> bool:
        """A hybrid transducer + CTC model, exported through its transducer branch (the family's rule)."""
        return self.family.ctc_branch

    @property
    def is_tdt(self) -> bool:
        """Whether the joint emits durations (the family's rule)."""
        return self.family.tdt

    @property
    def joiner_output_dim(self) -> int:
        """The joiner's output width (the family's rule)."""
        return self.family.joiner_output_dim(self.vocab_size, self.durations)

    @property
    def blank_id(self) -> int:
        """NeMo puts blank after the vocabulary; tokens.txt's last line."""
        return self.vocab_size

    @property
    def sherpa_durations(self) -> list[int]:
        """The durations sherpa-onnx assumes: it skips as many frames as the best duration logit's index."""
        return list(range(len(self.durations)))

    def check_sherpa_compatible(self) -> None:
        """Refuse what sherpa-onnx would load but decode wrong (before any export work)."""
        want = self.sherpa_durations
        if self.is_tdt and list(self.durations) != want:
            raise InputError(
                f"TDT durations {list(self.durations)} are not {want}: sherpa-onnx takes the index of the best "
                f"duration logit as the number of frames to skip, so this model would decode wrong there. "
                f"nemo2sherpa converts TDT models whose durations are 0..N-1 (every Parakeet-TDT release uses "
                f"[0, 1, 2, 3, 4])"
            )

    def to_dict(self) -> dict[str, Any]:
        """The spec as export.json records it (with the derived figures later stages read)."""
        d = dataclasses.asdict(self)
        d["durations"] = list(self.durations)
        d["family"] = self.family.name
        d["hybrid"] = self.hybrid
        d["is_tdt"] = self.is_tdt
        d["joiner_output_dim"] = self.joiner_output_dim
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        """The spec back from export.json."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["durations"] = tuple(kw.get("durations", ()))
        return cls(**kw)

    @classmethod
    def from_config(cls, cfg: dict[str, Any], target: str | None = None) -> ModelSpec:
        """Derive the spec from a NeMo model config (the dict of model_config.yaml)."""
        target = target or cfg.get("target") or cfg.get("_target_") or ""
        model_class = target.rsplit(".", 1)[-1] if target else _guess_class(cfg)
        if model_class not in TRANSDUCER_CLASSES:
            raise InputError(
                f"the checkpoint's model class is {model_class or 'unknown (no target in its config)'}, which is not a "
                f"transducer (RNNT/TDT): sherpa-onnx's NeMo transducer loader needs an encoder, a prediction net "
                f"and a joint. nemo2sherpa converts {', '.join(sorted(TRANSDUCER_CLASSES))} checkpoints such as "
                f"nvidia/parakeet-tdt-1.1b (a hybrid TDT+CTC model is converted through its transducer branch)"
            )
        pre = cfg.get("preprocessor") or {}
        enc = cfg.get("encoder") or {}
        dec = cfg.get("decoder") or {}
        joint = cfg.get("joint") or {}
        prednet = dec.get("prednet") or {}
        decoding = cfg.get("decoding") or {}
        loss = cfg.get("loss") or {}
        defaults = cfg.get("model_defaults") or {}

        durations = decoding.get("durations") or (loss.get("tdt_kwargs") or {}).get("durations") or []
        if not durations and decoding.get("model_type") == "tdt":
            durations = defaults.get("tdt_durations") or []
        num_extra = int(joint.get("num_extra_outputs") or 0)
        if durations and num_extra != len(durations):
            raise InputError(
                f"inconsistent TDT config: {len(durations)} durations {list(durations)} but the joint "
                f"has num_extra_outputs={num_extra}; the checkpoint's config is damaged"
            )
        vocab = dec.get("vocab_size") or joint.get("num_classes")
        if vocab is None:
            vocabulary = joint.get("vocabulary") or []
            vocab = len(vocabulary) if vocabulary else None
        if vocab is None:
            raise InputError("model config has no decoder.vocab_size / joint.num_classes: cannot size tokens.txt")
        normalize = pre.get("normalize")
        return cls(
            model_class=model_class,
            feat_dim=_field(pre.get("features") or enc.get("feat_in"), "preprocessor.features (or encoder.feat_in)"),
            vocab_size=int(vocab),
            durations=tuple(int(d) for d in durations),
            pred_hidden=_field(prednet.get("pred_hidden") or defaults.get("pred_hidden"),
                               "decoder.prednet.pred_hidden (or model_defaults.pred_hidden)"),
            pred_rnn_layers=_field(prednet.get("pred_rnn_layers", 1), "decoder.prednet.pred_rnn_layers"),
            enc_hidden=_field(enc.get("d_model"), "encoder.d_model"),
            encoder_layers=_field(enc.get("n_layers"), "encoder.n_layers"),
            subsampling_factor=int(enc.get("subsampling_factor", 1)),
            normalize_type=str(normalize) if normalize else "",
            sample_rate=int(cfg.get("sample_rate") or pre.get("sample_rate") or 16000),
        )


def _field(value: Any, name: str) -> int:
    """A required integer of the model config, or InputError naming the field."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InputError(f"the checkpoint's model config has no usable {name} ({value!r}): it is damaged or not a "
                         f"NeMo transducer config; nemo2sherpa derives every figure it writes from these fields") from None


def _guess_class(cfg: dict[str, Any]) -> str:
    if "aux_ctc" in cfg and "joint" in cfg:
        return "EncDecHybridRNNTCTCBPEModel"
    if "joint" in cfg:
        return "EncDecRNNTBPEModel"
    dec = (cfg.get("decoder") or {}).get("_target_", "")
    if "ConvASRDecoder" in dec:
        return "EncDecCTCModelBPE"
    return ""


def safe_nemo_members(path: Path) -> list[tarfile.TarInfo]:
    """List a .nemo archive's members, refusing anything that escapes the extraction dir."""
    try:
        tf = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise InputError(
            f"{path} is not a readable .nemo archive ({e}); re-download it (a truncated download is the usual cause)"
        ) from None
    with tf:
        try:
            members = tf.getmembers()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise InputError(f"{path} is truncated or corrupt ({e}); re-download it") from None
    for m in members:
        p = PurePosixPath(m.name)
        if p.is_absolute() or ".." in p.parts or m.issym() or m.islnk() or m.isdev():
            raise InputError(
                f"{path} has an unsafe member {m.name!r} (absolute path, '..', link or device): "
                f"refusing to extract it; obtain the checkpoint from a trusted source"
            )
    return members


def unpack_nemo(path: Path, dest: Path) -> list[str]:
    """Extract a .nemo's regular files into `dest` (members checked by safe_nemo_members first); returns their names.
    An uncompressed archive (NeMo's own format) is copied by the kernel from each member's byte range
    (copy_file_range): the 1.1B's 4.3 GB of weights in seconds, where tarfile's 16 KB Python loop took 24 s."""
    members = safe_nemo_members(path)
    try:
        tf = tarfile.open(path, "r:")  # uncompressed: member data are byte ranges of the file
        plain = True
    except tarfile.ReadError:
        tf, plain = tarfile.open(path, "r:*"), False
    names = []
    with tf, open(path, "rb") as raw:
        for m in members:
            target = Path(dest, *PurePosixPath(m.name).parts)
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            if not m.isfile():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as out:
                if plain:
                    _copy_range(raw, out, m.offset_data, m.size)
                else:
                    shutil.copyfileobj(tf.extractfile(m), out, 8 << 20)
            names.append(m.name)
    return names


def _copy_range(src, dst, offset: int, size: int) -> None:
    """`size` bytes of `src` from `offset` into `dst`, in the kernel where it can (copy_file_range)."""
    done = 0
    try:
        while done < size:
            n = os.copy_file_range(src.fileno(), dst.fileno(), size - done, offset + done)
            if n == 0:
                raise EOFError(f"{src.name} ends inside a member: truncated")
            done += n
    except (AttributeError, OSError):  # no copy_file_range here (or across these file systems): read and write
        src.seek(offset + done)
        while done < size:
            chunk = src.read(min(8 << 20, size - done))
            if not chunk:
                raise EOFError(f"{src.name} ends inside a member: truncated") from None
            dst.write(chunk)
            done += len(chunk)


def read_nemo_config(path: Path) -> dict[str, Any]:
    """Read model_config.yaml out of a .nemo without NeMo (needs PyYAML)."""
    import yaml

    members = safe_nemo_members(path)
    cfg_members = [m for m in members if PurePosixPath(m.name).name == "model_config.yaml"]
    if not cfg_members:
        raise InputError(f"{path} has no model_config.yaml: it is not a NeMo checkpoint")
    with tarfile.open(path, "r:*") as tf:
        f = tf.extractfile(cfg_members[0])
        if f is None:  # a directory or special file under that name
            raise InputError(f"{path}: model_config.yaml is not a regular file in the archive")
        text = f.read().decode("utf-8")
    cfg = yaml.safe_load(io.StringIO(text))
    if not isinstance(cfg, dict):
        raise InputError(f"{path}: model_config.yaml is not a mapping")
    return cfg
