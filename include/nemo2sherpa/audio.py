"""Evaluation clips: 16 kHz mono 16-bit WAV files with reference texts (stdlib; numpy where samples are read)."""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CLIPS = Path(__file__).resolve().parent / "data" / "clips"


@dataclass(frozen=True)
class Clip:
    """One evaluation clip: its name, wav path and reference text."""

    name: str
    path: Path
    text: str


def load_clips(clips_dir: Path | None = None) -> list[Clip]:
    """The evaluation clips of a folder (default: the built-in ones) with the texts of its texts.tsv."""
    clips_dir = Path(clips_dir or DEFAULT_CLIPS)
    table = clips_dir / "texts.tsv"
    clips = []
    for line in table.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        name, text = line.split("\t", 1)
        clips.append(Clip(name, clips_dir / f"{name}.wav", text.strip()))
    return clips


def read_wav(path: Path):
    """Samples as float32 in [-1, 1] and the sample rate; refuses anything but mono 16-bit PCM."""
    import numpy as np

    with wave.open(str(path), "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{path}: need mono 16-bit PCM, got {w.getnchannels()} ch x {8 * w.getsampwidth()} bit")
        rate = w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return data.astype(np.float32) / 32768.0, rate


def fixed_length(samples, rate: int, seconds: float):
    """Tile (or cut) speech to an exact length, for latency by clip length."""
    import numpy as np

    n = int(round(seconds * rate))
    reps = int(np.ceil(n / max(1, len(samples))))
    return np.tile(samples, reps)[:n].astype(np.float32)
