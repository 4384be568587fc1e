"""The evaluation set, an input: the audio (and texts) every validation gate and report is measured on.

Given as a NeMo-style JSON-lines manifest (`audio_filepath`, optional `text`, optional `duration`; relative
paths resolved against the manifest's folder) or a folder of audio files with an optional `texts.tsv`
(`name<TAB>text`, name = the file's stem); default: the built-in clips. Every clip is read with soundfile
(wav, flac, ogg, mp3), mixed to mono and resampled to the model's rate with soxr, then written as 16-bit PCM
wav into the run's workspace with a `texts.tsv`, the layout `audio.load_clips` reads. A set larger than
`max_clips` is sampled with a fixed seed. Anything wrong (a missing file, an empty manifest, a file that is
not audio, an unreadable line) is one InputError naming it, before export starts, and leaves no folder.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .audio import DEFAULT_CLIPS
from .errors import InputError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3")
MAX_CLIPS = 32  # default cap: more clips mean a slower validate (NeMo, ONNX and sherpa-onnx decode each)
SEED = 0  # the sample of a set over the cap is the same on every run


@dataclass(frozen=True)
class Item:
    """One clip of a set as given: its audio file and reference text ('' when none)."""

    path: Path
    text: str


def read_manifest(path: Path) -> list[Item]:
    """A JSON-lines manifest's clips; InputError naming the line that is not one."""
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            audio = row["audio_filepath"]
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{path} line {n} is not a manifest entry (a JSON object with audio_filepath): "
                             f"{line[:120]!r}; fix or remove that line") from None
        p = Path(audio).expanduser()
        items.append(Item(p if p.is_absolute() else path.parent / p, str(row.get("text") or "").strip()))
    return items


def read_folder(folder: Path) -> list[Item]:
    """A folder's audio files (sorted by name) with the texts of its optional texts.tsv."""
    texts: dict[str, str] = {}
    table = folder / "texts.tsv"
    if table.exists():
        for n, line in enumerate(table.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                name, tab, text = line.partition("\t")
                if not tab:
                    raise InputError(f"{table} line {n} is not 'name<TAB>text': {line[:120]!r}")
                texts[name.strip()] = text.strip()
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    return [Item(p, texts.get(p.stem, "")) for p in files]


def items_of(spec: str) -> list[Item]:
    """The clips an eval_set value names (a manifest file or a folder); InputError when it names none."""
    p = Path(spec).expanduser()
    if spec.startswith("s3://"):
        raise InputError(f"eval_set {spec}: s3:// evaluation sets are not supported yet; copy the set where the "
                         f"workers can read it and give that path")
    if not p.exists():
        raise InputError(f"eval_set {spec}: no such manifest or folder; give a JSON-lines manifest or a folder of "
                         f"audio files readable by the workers")
    items = read_folder(p) if p.is_dir() else read_manifest(p)
    if not items:
        raise InputError(f"eval_set {spec} holds no clips (a manifest needs JSON lines with audio_filepath; a folder "
                         f"needs {', '.join(AUDIO_SUFFIXES)} files)")
    missing = [str(i.path) for i in items if not i.path.is_file()]
    if missing:
        raise InputError(f"eval_set {spec}: {len(missing)} audio file(s) missing, first {missing[0]}; fix the paths "
                         f"(relative ones are read from the manifest's folder)")
    return items


def _sample(items: list[Item], cap: int) -> list[Item]:
    if len(items) <= cap:
        return items
    keep = sorted(random.Random(SEED).sample(range(len(items)), cap))
    return [items[i] for i in keep]


def _name(i: int, path: Path) -> str:
    return f"{i:03d}-" + re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem)[:60]


def _convert(item: Item, dst: Path, rate: int) -> float:
    """The clip as 16-bit mono PCM wav at `rate`; its duration in seconds. InputError for what is not audio."""
    import numpy as np
    import soundfile
    import soxr

    try:
        data, sr = soundfile.read(str(item.path), dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001 - libsndfile's refusals come in several types
        raise InputError(f"{item.path} is not audio soundfile can read ({str(e)[:160]}); give wav, flac, ogg or mp3 "
                         f"files") from None
    if not len(data):
        raise InputError(f"{item.path} holds no samples; leave it out of the evaluation set")
    mono = data.mean(axis=1)
    if sr != rate:
        mono = soxr.resample(mono, sr, rate, quality="HQ")
    soundfile.write(str(dst), np.clip(mono, -1.0, 1.0), rate, subtype="PCM_16")
    return len(mono) / rate


def prepare(spec: str | None, dest: Path, rate: int = 16000, max_clips: int = MAX_CLIPS) -> dict[str, Any]:
    """The evaluation set in `dest` (wav files + texts.tsv) and its record: source, sha256 (of every input file's
    bytes and text, in order), the clips used with their durations, how many there were. None: the built-in clips,
    used where they are."""
    from .source import sha256_file

    if not spec:
        items, out = [Item(DEFAULT_CLIPS / f"{n}.wav", t) for n, t in _builtin()], DEFAULT_CLIPS
    else:
        items, out = items_of(spec), Path(dest)
    used = _sample(items, max(1, int(max_clips)))
    digest = hashlib.sha256()
    for it in used:
        digest.update(f"{it.path.name}\t{sha256_file(it.path)}\t{it.text}\n".encode())
    clips = []
    if spec:
        tmp = out.with_name(out.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            for i, it in enumerate(used):
                name = _name(i, it.path)
                clips.append({"name": name, "from": str(it.path), "duration_s": round(_convert(it, tmp / f"{name}.wav",
                                                                                               rate), 3)})
            (tmp / "texts.tsv").write_text("".join(f"{c['name']}\t{it.text}\n" for c, it in zip(clips, used)),
                                           encoding="utf-8")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # no partial set behind a refusal
            raise
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    else:
        clips = [{"name": it.path.stem, "from": str(it.path), "duration_s": round(_duration(it.path), 3)}
                 for it in used]
    return {"source": spec or "built-in", "dir": str(out), "sha256": digest.hexdigest(), "clips": clips,
            "total_clips": len(items), "sampled": len(used) < len(items), "seed": SEED,
            "duration_s": round(sum(c["duration_s"] for c in clips), 3)}


def _builtin() -> list[tuple[str, str]]:
    rows = (DEFAULT_CLIPS / "texts.tsv").read_text(encoding="utf-8").splitlines()
    return [tuple(r.split("\t", 1)) for r in rows if r.strip()]  # type: ignore[misc]


def _duration(path: Path) -> float:
    import wave

    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def with_eval_set(found: dict[str, Any], eval_set: str | None, dest: Path, max_clips: int | None) -> dict[str, Any]:
    """The source manifest with its evaluation set prepared (evalset.prepare) at the checkpoint's sample rate: the
    run's eval_set, else the registry entry's (relative to the registry file), else the built-in clips."""
    from .modelspec import ModelSpec, read_nemo_config
    from .registry import load_registry, registry_path

    entry = load_registry().get(found.get("registry") or "", {})
    spec = eval_set or (str((registry_path().parent / entry["eval_set"]).resolve()) if entry.get("eval_set") else None)
    # A set of the user's is resampled to the checkpoint's rate; the built-in clips are 16 kHz as they are (export
    # refuses them for a model of another rate).
    rate = ModelSpec.from_config(read_nemo_config(Path(found["path"]))).sample_rate if spec else 16000
    return {**found, "eval_set": prepare(spec, dest, rate, max_clips or MAX_CLIPS)}
