"""The evaluation set, an input: the audio (and texts) every validation gate and report is measured on.

Given as a NeMo-style JSON-lines manifest (`audio_filepath`, optional `text`, optional `duration`; relative
paths resolved against the manifest's folder) or a folder of audio files with an optional `texts.tsv`
(`name<TAB>text`, name = the file's stem), on local disk or in the user's bucket (an s3:// manifest object or
prefix; manifest entries may be s3:// URLs too; read with the run's S3 credentials, see s3input); default: the
built-in set: the four built-in clips and two long ones made from them (LONG_CLIPS: >= 30 s and >= 60 s of
the same speech with pauses, for drift by length). Every clip is read with soundfile
(wav, flac, ogg, mp3), mixed to mono and resampled to the model's rate with soxr, then written as 16-bit PCM
wav into the run's workspace with a `texts.tsv`, the layout `audio.load_clips` reads. A set larger than
`max_clips` is sampled with a fixed seed. Anything wrong (a missing file, an empty manifest, a file that is
not audio, an unreadable line) is one InputError naming it, before export starts, and leaves no folder.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import random
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .audio import DEFAULT_CLIPS
from .errors import InputError
from .records import EvalClip, EvalSet, Source

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3")
MAX_CLIPS = 32  # default cap: more clips mean a slower validate (NeMo, ONNX and sherpa-onnx decode each)
MAX_EVAL_CLIPS = 256  # the most a run may ask for: each clip is decoded ~10 times at 1.1B
SEED = 0  # the sample of a set over the cap is the same on every run
BUILTIN = "built-in"
# The built-in set's long clips: (name, at least this many seconds, first built-in clip): the built-in clips in turn
# from that one, each followed by a pause of PAUSES_S in turn, until the clip is that long.
LONG_CLIPS = (("long30s", 30.0, 0), ("long60s", 60.0, 2))


@dataclass(frozen=True)
class Item:
    """One clip of a set as given: its audio file and reference text ('' when none)."""

    path: Path  # where its audio lies (for a remote clip: where it is downloaded to)
    text: str
    remote: str = ""  # s3:// URL of a clip in a bucket, fetched once the set is sampled


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
        text = str(row.get("text") or "").strip()
        if str(audio).startswith("s3://"):
            items.append(Item(Path(posixpath.basename(audio)), text, remote=audio))
            continue
        p = Path(audio).expanduser()
        items.append(Item(p if p.is_absolute() else path.parent / p, text))
    return items


def _key_beside(url: str, bucket: str, folder: str, path: Path, raw: Path) -> str:
    """The s3:// URL of a manifest entry that is not a URL: a key relative to the manifest's folder, in its bucket.
    InputError for a local path (an s3:// manifest must not read the worker's disk) or a key that leaves the
    bucket's root."""
    if raw not in path.parents:
        raise InputError(f"eval_set {url} names a local path ({path}): an s3:// manifest may name objects of its own "
                         f"bucket only (relative to the manifest, or s3://{bucket}/...); fix that line")
    rel = posixpath.normpath(posixpath.join(folder, path.relative_to(raw).as_posix()))
    if rel.startswith("../") or rel == "..":
        raise InputError(f"eval_set {url} names {path.relative_to(raw)}, which leaves the bucket's root; fix that line")
    return f"s3://{bucket}/{rel}"


def _read_texts(table: Path) -> dict[str, str]:
    texts: dict[str, str] = {}
    for n, line in enumerate(table.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            name, tab, text = line.partition("\t")
            if not tab:
                raise InputError(f"{table} line {n} is not 'name<TAB>text': {line[:120]!r}")
            texts[name.strip()] = text.strip()
    return texts


def read_folder(folder: Path) -> list[Item]:
    """A folder's audio files (sorted by name) with the texts of its optional texts.tsv."""
    texts = _read_texts(folder / "texts.tsv") if (folder / "texts.tsv").exists() else {}
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    return [Item(p, texts.get(p.stem, "")) for p in files]


def read_s3(url: str, raw: Path) -> list[Item]:
    """The clips of an s3:// manifest object (*.jsonl, *.json; relative entries are keys beside it) or prefix (its
    audio objects, not those of sub-prefixes, and its texts.tsv). Only the manifest and texts.tsv are read now;
    the audio is fetched once the set is sampled. InputError naming the keys that are missing."""
    from .s3input import client, fetch, list_keys, split_url

    s3, (bucket, key) = client(), split_url(url)
    if key.endswith((".jsonl", ".json")):
        listed = read_manifest(fetch(s3, url, raw / "manifest.jsonl"))
        folder = posixpath.dirname(key)
        items = [it if it.remote else Item(Path(it.path.name), it.text, _key_beside(url, bucket, folder, it.path, raw))
                 for it in listed]
        foreign = [it.remote for it in items if split_url(it.remote)[0] != bucket]
        if foreign:  # read with the run's credentials, and published in the archives' test_wavs/: its own bucket only
            raise InputError(f"eval_set {url} names audio in another bucket ({foreign[0]}): an s3:// manifest may name "
                             f"objects of its own bucket only; copy the clips to s3://{bucket}/ and name them there "
                             f"(or relative to the manifest)")
        present = {f"s3://{bucket}/{k}" for d in {posixpath.dirname(split_url(it.remote)[1]) for it in items
                                                  if it.remote.startswith(f"s3://{bucket}/")}
                   for k in list_keys(s3, f"s3://{bucket}/{d}")}
        missing = [it for it in items if it.remote.startswith(f"s3://{bucket}/") and it.remote not in present]
        if missing:
            raise InputError(f"eval_set {url}: {len(missing)} audio object(s) missing, first {missing[0].remote}; fix "
                             f"the manifest (relative paths are keys beside it)")
        return items
    prefix = key.rstrip("/") + "/" if key else ""
    here = [k for k in list_keys(s3, url) if "/" not in k[len(prefix):]]
    texts = _read_texts(fetch(s3, f"s3://{bucket}/{prefix}texts.tsv", raw / "texts.tsv")) \
        if f"{prefix}texts.tsv" in here else {}
    audio = [k for k in here if Path(k).suffix.lower() in AUDIO_SUFFIXES]
    return [Item(Path(posixpath.basename(k)), texts.get(Path(k).stem, ""), f"s3://{bucket}/{k}") for k in audio]


def _fetched(items: list[Item], raw: Path) -> list[Item]:
    """The remote clips downloaded (each into a folder of its own: names may repeat across prefixes)."""
    from .s3input import client, fetch

    s3 = client() if any(it.remote for it in items) else None
    return [Item(fetch(s3, it.remote, raw / "audio" / str(i) / it.path.name), it.text, it.remote) if it.remote
            else it for i, it in enumerate(items)]


def items_of(spec: str, raw: Path | None = None) -> list[Item]:
    """The clips an eval_set value names (a manifest file or a folder, local or s3://; remote ones are read into
    `raw`); InputError when it names none."""
    p = Path(spec).expanduser()
    if spec.startswith("s3://"):
        items = read_s3(spec, Path(raw or "."))
    elif not p.exists():
        raise InputError(f"eval_set {spec}: no such manifest or folder; give a JSON-lines manifest or a folder of "
                         f"audio files readable by the workers (or an s3:// manifest or prefix)")
    else:
        items = read_folder(p) if p.is_dir() else read_manifest(p)
    if not items:
        raise InputError(f"eval_set {spec} holds no clips (a manifest needs JSON lines with audio_filepath; a folder "
                         f"needs {', '.join(AUDIO_SUFFIXES)} files)")
    missing = [str(i.path) for i in items if not i.remote and not i.path.is_file()]
    if missing:
        raise InputError(f"eval_set {spec}: {len(missing)} audio file(s) missing, first {missing[0]}; fix the paths "
                         f"(relative ones are read from the manifest's folder)")
    return items


def _sample(items: list[Item], cap: int) -> list[Item]:
    if len(items) <= cap:
        return items
    keep = sorted(random.Random(SEED).sample(range(len(items)), cap))
    return [items[i] for i in keep]


def _names(items: list[Item]) -> list[str]:
    """Each clip's name in the prepared set: its file's stem, made safe; numbered in order where stems repeat."""
    stems = [re.sub(r"[^A-Za-z0-9._-]+", "_", it.path.stem)[:60] for it in items]
    return stems if len(set(stems)) == len(stems) else [f"{i:03d}-{s}" for i, s in enumerate(stems)]


def speech_with_pauses(seconds: float, first: int = 0) -> tuple[Any, str]:
    """At least `seconds` of the built-in clips in turn from clip `first`, each followed by a pause of PAUSES_S in
    turn (16 kHz float samples, the same on every run), and the clips' texts joined."""
    from .audio import load_clips, read_wav, with_pauses

    short = load_clips(DEFAULT_CLIPS)
    samples, order = with_pauses([read_wav(c.path)[0] for c in short], seconds, 16000, first)
    return samples, " ".join(short[i].text for i in order)


def write_speech_with_pauses(path: Path, seconds: float, first: int = 0) -> float:
    """speech_with_pauses written to `path` (16 kHz 16-bit wav); its length in seconds."""
    import soundfile

    samples, _ = speech_with_pauses(seconds, first)
    soundfile.write(str(path), samples, 16000, subtype="PCM_16")
    return len(samples) / 16000


def long_clips(folder: Path) -> list[Item]:
    """The built-in set's long clips (LONG_CLIPS), written into `folder` (16 kHz 16-bit wav): the built-in speech
    with pauses, the same bytes on every run; their texts the clips' texts joined."""
    import soundfile

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, seconds, first in LONG_CLIPS:
        samples, text = speech_with_pauses(seconds, first)
        soundfile.write(str(folder / f"{name}.wav"), samples, 16000, subtype="PCM_16")
        out.append(Item(folder / f"{name}.wav", text))
    return out


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


def prepare(spec: str | None, dest: Path, rate: int = 16000, max_clips: int = MAX_CLIPS) -> EvalSet:
    """The evaluation set in `dest` (wav files + texts.tsv) and its record: source, sha256 (of every input file's
    bytes and text, in order), the clips used with their durations, how many there were. None: the built-in set
    (its four clips and LONG_CLIPS)."""
    raw = Path(dest).with_name(Path(dest).name + ".raw")  # an s3:// set's downloads, the long clips; then removed
    try:
        items = items_of(spec, raw) if spec else [Item(DEFAULT_CLIPS / f"{n}.wav", t) for n, t in _builtin()] + \
            long_clips(raw)
        return _record(spec or BUILTIN, items, Path(dest), rate, max_clips, raw)
    finally:
        shutil.rmtree(raw, ignore_errors=True)


def _record(spec: str, items: list[Item], out: Path, rate: int, max_clips: int, raw: Path) -> EvalSet:
    """The sampled clips converted into `out` (through out.partial: no half-made set behind a refusal), recorded."""
    from .source import sha256_file

    used = _fetched(_sample(items, max(1, int(max_clips))), raw)
    digest = hashlib.sha256()
    for it in used:
        digest.update(f"{it.path.name}\t{sha256_file(it.path)}\t{it.text}\n".encode())
    clips = []
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name, it in zip(_names(used), used):
            clips.append(EvalClip(name, it.remote or (f"{BUILTIN}:{it.path.name}" if spec == BUILTIN
                                                      else str(it.path)),
                                  round(_convert(it, tmp / f"{name}.wav", rate), 3)))
        (tmp / "texts.tsv").write_text("".join(f"{c.name}\t{it.text}\n" for c, it in zip(clips, used)),
                                       encoding="utf-8")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return EvalSet(source=spec, dir=out, sha256=digest.hexdigest(), clips=clips, total_clips=len(items),
                   sampled=len(used) < len(items), seed=SEED, duration_s=round(sum(c.duration_s for c in clips), 3))


def _builtin() -> list[tuple[str, str]]:
    rows = (DEFAULT_CLIPS / "texts.tsv").read_text(encoding="utf-8").splitlines()
    return [tuple(r.split("\t", 1)) for r in rows if r.strip()]  # type: ignore[misc]


def with_eval_set(found: Source, eval_set: str | None, dest: Path, max_clips: int | None) -> Source:
    """The source manifest with its evaluation set prepared (evalset.prepare) at the checkpoint's sample rate: the
    run's eval_set, else the registry entry's (relative to the registry file), else the built-in clips."""
    from .modelspec import ModelSpec, read_nemo_config
    from .registry import entry_of, registry_path

    entry = entry_of(found)
    spec = eval_set or (str((registry_path().parent / entry.eval_set).resolve()) if entry and entry.eval_set else None)
    # A set of the user's is resampled to the checkpoint's rate; the built-in set is 16 kHz (export refuses it for a
    # model of another rate, naming the fix: an evaluation set of its own).
    rate = ModelSpec.from_config(read_nemo_config(Path(found.path))).sample_rate if spec else 16000
    return replace(found, eval_set=prepare(spec, dest, rate, max_clips or MAX_CLIPS))
