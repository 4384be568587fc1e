"""Stage, package (ONNX venv, after compat): the bundle as sherpa-onnx users download models, one archive a variant.

Named and laid out as sherpa-onnx's own NeMo releases (its export-nemo-parakeet-tdt workflows):
`sherpa-onnx-nemo-<model>[-<variant>].tar[.gz]` (no suffix for fp32; the format is the variant's, variants.py says
why: int8 gzipped on every core, float variants uncompressed) holding one folder of that name with the
variant's graphs (and external weights), `tokens.txt`, `bpe.vocab`, `test_wavs/` (evaluation clips the model
transcribes, `0.wav`, `1.wav`, ... and their texts in `trans.txt`) and a `README.md` model card: the source and
revision, the license, the validation figures, the runtime table and copy-paste usage for Python, the CLI, Node,
the C API and Rust. Every model file goes in as exactly the bytes validate passed (hashed while it is written;
anything else is refused), streamed: memory stays flat at 1.1B size. Members are regular files, mode 0644, owned by
root (a link or a special file in the bundle is refused). The bundle folder also gets the card of its base variant
as README.md.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import tarfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .errors import PermanentError
from .progress import Progress
from .records import Archive, Compatibility, Export, PackageResult, Source, TestWav, Validation
from .variants import BASE, BPE_VOCAB, TOKENS, VARIANTS, variant_paths

log = logging.getLogger("nemo2sherpa.archive")
TEST_WAVS = 4  # clips in test_wavs/: the shortest the model knows
CARD = "README.md"


def archive_name(model: str, variant: str) -> str:
    """sherpa-onnx's name for a NeMo model's release: sherpa-onnx-nemo-<model>, -<variant> but for fp32."""
    return f"sherpa-onnx-nemo-{model}" + ("" if variant == BASE.name else f"-{variant}")


def archive_file(model: str, variant: str) -> str:
    """The archive's file name: its name and the variant's format (variants.ARCHIVE_FORMATS)."""
    return f"{archive_name(model, variant)}.{VARIANTS[variant].archive}"


class _Hashing(io.RawIOBase):
    """A file read through sha256 (and progress), for tarfile.addfile."""

    def __init__(self, path: Path, progress: Progress) -> None:
        self.f, self.h, self.progress, self.done = open(path, "rb"), hashlib.sha256(), progress, 0

    def readable(self) -> bool:
        """A readable stream."""
        return True

    def readinto(self, b) -> int:
        """Read into b, hashing what was read."""
        n = self.f.readinto(b)
        self.h.update(memoryview(b)[:n])
        self.done += n
        self.progress.update(self.done)
        return n

    def close(self) -> None:
        """Close the file."""
        self.f.close()
        super().close()


class _HashingWriter:
    """A binary file written through sha256."""

    def __init__(self, f, h) -> None:
        self.f, self.h = f, h

    def write(self, b) -> int:
        """Write b, hashing it."""
        self.h.update(b)
        return self.f.write(b)


GZIP_PIECE = 16 << 20  # each gzip member: one thread's unit of work


class _ParallelGzip:
    """A write-only stream gzipped in GZIP_PIECE pieces on every core, each piece a gzip member of its own, written in
    order (RFC 1952: members back to back are one gzip stream; gzip, tar and Python read them). zlib releases the GIL,
    so the pieces compress in parallel; at most 2 x workers pieces are in flight."""

    def __init__(self, out, level: int = 6, workers: int = 0) -> None:
        self.out, self.level, self.workers = out, level, workers or os.cpu_count() or 1
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="gzip")
        self.pending: deque = deque()
        self.buf = bytearray()

    def write(self, b) -> int:
        """Buffer b; full pieces go to the pool, finished ones to the file."""
        self.buf += b
        while len(self.buf) >= GZIP_PIECE:
            self._submit(bytes(self.buf[:GZIP_PIECE]))
            del self.buf[:GZIP_PIECE]
        return len(b)

    def _submit(self, piece: bytes) -> None:
        self.pending.append(self.pool.submit(gzip.compress, piece, self.level, mtime=0))
        while len(self.pending) > 2 * self.workers:
            self.out.write(self.pending.popleft().result())

    def close(self) -> None:
        """The last piece, every member written in order."""
        if self.buf:
            self._submit(bytes(self.buf))
            self.buf.clear()
        while self.pending:
            self.out.write(self.pending.popleft().result())
        self.pool.shutdown()


def _add(tar: tarfile.TarFile, path: Path, arcname: str, want: tuple[int, str] | None) -> None:
    """One file into the archive as a regular file, mode 0644, its bytes hashed on the way; PermanentError for a link
    or a special file, or for bytes that are not what validate passed (the archive is then removed by the caller)."""
    if path.is_symlink() or not path.is_file():
        raise PermanentError(f"{path} is not a regular file (a link or a special file): archives hold regular files "
                             f"only; nothing was packaged")
    info = tarfile.TarInfo(arcname)
    info.size, info.mtime, info.mode, info.type = path.stat().st_size, int(path.stat().st_mtime), 0o644, tarfile.REGTYPE
    src = _Hashing(path, Progress(log, "archiving", path.name, info.size))
    try:
        tar.addfile(info, io.BufferedReader(src, 8 << 20))
    finally:
        src.close()
    if want and (info.size, src.h.hexdigest()) != tuple(want):
        raise PermanentError(f"{path.name} is not the file validate passed (sha256 {src.h.hexdigest()[:16]}, "
                             f"validated {want[1][:16]}): re-run validate; nothing was packaged")


def test_wavs(export: Export, known: set[str]) -> list[TestWav]:
    """The archive's test clips: the TEST_WAVS shortest clips the model knows (else the shortest), in export's order
    (each with its index there: where the text sherpa-onnx gave on it is, what the model card's snippets must print)."""
    clips = [TestWav(name=c.name, path=Path(c.path), text=c.text, duration_s=c.duration_s, index=i)
             for i, c in enumerate(export.clips)]
    pool = [c for c in clips if c.name in known] or clips
    chosen = sorted(pool, key=lambda c: c.duration_s)[:TEST_WAVS]
    return sorted(chosen, key=lambda c: c.index)


@dataclass(frozen=True)
class Member:
    """One file of a release (an archive's folder, a Hub repo): its name there and its bytes, a file on this worker
    (with the size and sha256 validate passed, for a model file) or a text."""

    name: str
    path: Path | None = None
    text: str | None = None
    want: tuple[int, str] | None = None


@dataclass(frozen=True)
class Release:
    """One variant as sherpa-onnx users download it, declared once for every place it is published: its name
    (sherpa-onnx-nemo-<model>[-<variant>]) and its members in order, README.md (its model card) last."""

    name: str
    variant: str
    members: list[Member]


def _inputs(bundle: Path, reference: Path,
            source: Source) -> tuple[Validation, Compatibility | None, list[TestWav], str]:
    """What the releases and their cards are made from: validation.json, compatibility.json (None where the matrix
    was off), the test clips, the model's name."""
    validated = Validation.read(bundle)
    compat = Compatibility.read(bundle) if (bundle / Compatibility.FILE).exists() else None
    wavs = test_wavs(Export.read(reference), set(validated.known_clips or []))
    return validated, compat, wavs, source.registry or source.name or "model"


def releases(bundle: Path, reference: Path, variants: list[str], source: Source,
             license_: str | None = None) -> list[Release]:
    """Each variant's release: its graphs (and external weights), tokens.txt, bpe.vocab (the files validate passed,
    with their digests), test_wavs/ with trans.txt, and README.md, its model card."""
    from .card import model_card

    bundle = Path(bundle)
    validated, compat, wavs, model = _inputs(bundle, reference, source)
    digests = {f.name: (f.size, f.sha256) for f in validated.files or []}
    out = []
    for v in variants:
        name = archive_name(model, v)
        files = [*variant_paths(bundle, v), bundle / TOKENS, bundle / BPE_VOCAB]
        members = [Member(p.name, path=p, want=digests.get(p.name)) for p in files if p.exists()]
        members += [Member(f"test_wavs/{i}.wav", path=w.path) for i, w in enumerate(wavs)]
        members.append(Member("test_wavs/trans.txt", text="".join(f"{i}.wav {w.text}\n" for i, w in enumerate(wavs))))
        card = model_card(name, v, model, source, validated, compat, wavs, license_)
        out.append(Release(name, v, [*members, Member(CARD, text=card)]))
    return out


def package(bundle: Path, reference: Path, variants: list[str], source: Source,
            license_: str | None = None) -> PackageResult:
    """One release archive a variant, in the bundle folder, and README.md (the model card); their names, sizes and
    sha256s."""
    from .card import model_card

    bundle = Path(bundle)
    validated, compat, wavs, model = _inputs(bundle, reference, source)
    _check_disk(bundle, variants)
    out = [_write(bundle, r) for r in releases(bundle, reference, variants, source, license_)]
    (bundle / CARD).write_text(model_card(archive_name(model, BASE.name), BASE.name, model, source, validated, compat,
                                          wavs, license_, archives=[a.name for a in out]))
    return PackageResult(archives=out, card=CARD)


def _check_disk(bundle: Path, variants: list[str]) -> None:
    """Refuse up front when the archives may not fit: at most their files' size (compression shrinks weights little)."""
    import shutil

    need = sum(p.stat().st_size for v in variants for p in variant_paths(bundle, v)) + (64 << 20)
    free = shutil.disk_usage(bundle).free
    if free < need:
        raise PermanentError(f"the release archives need up to {need / 1e9:.1f} GB in {bundle}, {free / 1e9:.1f} GB "
                             f"is free: free disk space (or build fewer variants); nothing was packaged")


def _write(bundle: Path, release: Release) -> Archive:
    """One archive in the variant's format, its members in one folder of the release's name, through
    <file>.partial renamed when complete (no half-written archive behind a failure)."""
    name, variant = release.name, release.variant
    dest = bundle / f"{name}.{VARIANTS[variant].archive}"
    part = dest.with_name(dest.name + ".partial")
    t0 = time.monotonic()
    digest = hashlib.sha256()  # of the archive's bytes, as they are written: the archive is not read back
    try:
        with open(part, "wb") as raw:
            sink = _HashingWriter(raw, digest)
            gz = _ParallelGzip(sink) if dest.name.endswith(".gz") else None
            with tarfile.open(fileobj=gz or sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for m in release.members:
                    if m.path is not None:
                        _add(tar, m.path, f"{name}/{m.name}", m.want)
                    else:
                        _bytes(tar, f"{name}/{m.name}", m.text or "")
            if gz:
                gz.close()
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    part.rename(dest)
    size = dest.stat().st_size
    models = [m.path for m in release.members if m.path is not None and m.path.parent == bundle]  # not test_wavs
    raw_size = sum(p.stat().st_size for p in models)
    log.info("%s: %s bytes (%.3f of its %s bytes: %s), %.1f s", dest.name, f"{size:,}", size / max(raw_size, 1),
             f"{raw_size:,}", ", ".join(p.name for p in models), time.monotonic() - t0)
    return Archive(name=dest.name, variant=variant, format=VARIANTS[variant].archive, size=size,
                   sha256=digest.hexdigest(), seconds=round(time.monotonic() - t0, 1))


def _bytes(tar: tarfile.TarFile, arcname: str, text: str) -> None:
    data = text.encode("utf-8")
    info = tarfile.TarInfo(arcname)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
    tar.addfile(info, io.BytesIO(data))
