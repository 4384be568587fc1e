"""reference/reference.npz, typed: what PyTorch (NeMo's own modules) computed at export, for validate to hold the
ONNX graphs to.

Each module on fixed inputs (the encoder on a random batch of unequal odd lengths, the prediction net step by step
with state, the joint on a grid); per evaluation clip NeMo's features, its greedy tokens and, where NeMo's modules
were followed step by step, that path (decisions, the best token logits, every duration logit); the encoder on the
short clips' features as one padded batch. Saved as one .npz of named arrays (`clip<i>_<field>` per clip).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FILE = "reference.npz"


@dataclass
class ClipReference:
    """One clip: NeMo's features [1, C, T] and greedy tokens; the path NeMo's modules took, where recorded (the
    decisions [n, 3]: frame, token, duration index; per decision the best token ids and logits, every duration
    logit)."""

    features: np.ndarray
    tokens: np.ndarray
    path: np.ndarray | None = None
    path_top: np.ndarray | None = None
    path_topv: np.ndarray | None = None
    path_dur: np.ndarray | None = None


@dataclass
class Reference:
    """Every module's PyTorch output on fixed inputs, and the evaluation clips' (see the module's docstring)."""

    enc_in_features: np.ndarray
    enc_in_lengths: np.ndarray
    enc_out: np.ndarray
    enc_out_lengths: np.ndarray
    dec_tokens: np.ndarray
    dec_out: np.ndarray
    dec_state_h: np.ndarray
    dec_state_c: np.ndarray
    joint_enc: np.ndarray
    joint_dec: np.ndarray
    joint_out: np.ndarray
    clips: list[ClipReference] = field(default_factory=list)
    clips_enc_in: np.ndarray | None = None  # the short clips' features as one zero-padded batch ...
    clips_enc_in_lengths: np.ndarray | None = None
    clips_enc_out: np.ndarray | None = None  # ... and the encoder's output on it
    clips_enc_out_lengths: np.ndarray | None = None

    def save(self, folder: Path) -> None:
        """reference.npz in `folder`."""
        arrays = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "clips"}
        for i, clip in enumerate(self.clips):
            arrays.update({f"clip{i}_{f.name}": getattr(clip, f.name) for f in dataclasses.fields(clip)})
        np.savez(Path(folder) / FILE, **{k: v for k, v in arrays.items() if v is not None})

    @classmethod
    def load(cls, folder: Path) -> Reference:
        """The reference saved in `folder`."""
        arrays = dict(np.load(Path(folder) / FILE))
        clips = []
        while f"clip{len(clips)}_features" in arrays:
            i = len(clips)
            clips.append(ClipReference(**{f.name: arrays.get(f"clip{i}_{f.name}")
                                          for f in dataclasses.fields(ClipReference)}))
        return cls(**{f.name: arrays.get(f.name) for f in dataclasses.fields(cls) if f.name != "clips"}, clips=clips)


def clip_features(folder: Path, index: int = 0) -> np.ndarray:
    """One clip's NeMo features, read alone from the reference in `folder` (at 1.1B the whole file is large)."""
    with np.load(Path(folder) / FILE) as arrays:
        return arrays[f"clip{index}_features"]


def encoder_batch(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The encoder on the random batch, read alone from a reference.npz: its features, their lengths, its output and
    the output's lengths (Reference.enc_in_features ... enc_out_lengths)."""
    names = ("enc_in_features", "enc_in_lengths", "enc_out", "enc_out_lengths")
    with np.load(path) as arrays:
        return tuple(arrays[n] for n in names)  # type: ignore[return-value]
