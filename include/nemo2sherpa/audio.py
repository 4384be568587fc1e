"""Evaluation clips: 16 kHz mono 16-bit WAV files with reference texts (stdlib; numpy where samples are read)."""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CLIPS = Path(__file__).resolve().parent / "data" / "clips"
PAUSES_S = (0.6, 1.1, 0.4, 1.6)  # the pauses between clips in a recording made of clips (with_pauses), in turn


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


def with_pauses(audio: list, seconds: float, rate: int, first: int = 0) -> tuple[object, list[int]]:
    """At least `seconds` of the clips' samples in turn from clip `first`, each followed by a pause of PAUSES_S in
    turn (the same on every run): the samples, and which clip each part is."""
    import numpy as np

    parts, order, n, k = [], [], 0, 0
    while n < seconds * rate:
        i = (first + k) % len(audio)
        pause = np.zeros(int(PAUSES_S[k % len(PAUSES_S)] * rate), np.float32)
        parts += [audio[i], pause]
        order.append(i)
        n, k = n + len(audio[i]) + len(pause), k + 1
    return np.concatenate(parts), order


def write_wav(path: Path, samples, rate: int) -> None:
    """Float samples in [-1, 1] as a mono 16-bit PCM wav (stdlib), clipped to the range."""
    import numpy as np

    pcm = np.clip(np.round(np.asarray(samples) * 32768.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
