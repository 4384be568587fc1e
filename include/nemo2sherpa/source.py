"""Stage 1, source (download venv): resolve a registry name, Hugging Face repo id, local path or s3:// URL.

Returns a small manifest: where the .nemo lies, its revision (a Hub commit sha, or for a local file or an
object in the user's bucket `sha256-<first 16 hex>` of its content), size and sha256.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import replace
from pathlib import Path

from .errors import InputError, TransientError
from .progress import Progress
from .records import Source
from .registry import RegistryEntry, load_registry
from .s3input import client as s3_client, fetch, split_url

log = logging.getLogger("nemo2sherpa.source")

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def sha256_file(path: Path, chunk: int = 8 << 20) -> str:
    """A file's sha256, read in 8 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def classify(source: str) -> tuple[str, str]:
    """('registry'|'local'|'hub'|'s3', value). Refuses what is none of them, with the fix."""
    source = (source or "").strip()
    if not source:
        raise InputError("source is empty: give a registry name (e.g. parakeet-tdt-1.1b), a repo id "
                         "(nvidia/parakeet-tdt-1.1b) or a path to a .nemo file")
    reg = load_registry()
    if source in reg:
        return "registry", source
    if source.startswith("s3://"):
        bucket, key = split_url(source)
        if not key.endswith(".nemo"):
            raise InputError(f"{source}: not a .nemo object; give the s3:// URL of a NeMo checkpoint (*.nemo)")
        return "s3", source
    p = Path(source).expanduser()
    if source.endswith(".nemo") or source.startswith(("/", ".", "~")):
        if not p.is_file():
            raise InputError(f"{source}: no such .nemo file; check the path (it must be readable by the worker)")
        if p.suffix != ".nemo":
            raise InputError(f"{source}: not a .nemo file; give the path of a NeMo checkpoint (*.nemo)")
        return "local", str(p.resolve())
    if REPO_ID.match(source):
        return "hub", source
    raise InputError(f"{source!r} is neither a registry model ({', '.join(sorted(reg))}), a Hugging Face repo id "
                     f"(owner/name) nor a path to a .nemo file")


def utc(timestamp: float) -> str:
    """A time as the manifests write it (UTC, seconds): what orders a model's revisions (publish.write_latest)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def resolve_source(source: str, revision: str | None, download_dir: Path) -> Source:
    """The checkpoint on local disk and its manifest (kind, name, revision, its date, sha256, size, path)."""
    kind, value = classify(source)
    if kind == "registry":
        entry = load_registry()[value]
        found = resolve_source(entry.repo_id, revision or entry.revision, download_dir)
        return replace(found, name=value, registry=value)
    if kind == "local":
        p = Path(value)
        t0 = time.monotonic()
        digest = sha256_file(p)
        log.info("local checkpoint %s: %s bytes, sha256 %s (%.1f s)", p, f"{p.stat().st_size:,}", digest,
                 time.monotonic() - t0)
        return Source(kind="local", name=p.stem, path=p, revision=f"sha256-{digest[:16]}", sha256=digest,
                      size=p.stat().st_size, revision_date=utc(p.stat().st_mtime))
    if kind == "s3":
        return download_s3(value, download_dir)
    return download_hub(value, revision, download_dir)


def download_s3(url: str, download_dir: Path) -> Source:
    """A .nemo in the user's bucket, through the S3 credentials of the environment (s3input): downloaded whole,
    its sha256 is its revision, as for a local file (an object's ETag is not a content hash for multipart
    uploads)."""
    path = fetch(s3_client(), url, Path(download_dir) / split_url(url)[1].rsplit("/", 1)[-1])
    t0 = time.monotonic()
    digest = sha256_file(path)
    log.info("checkpoint %s: %s bytes, sha256 %s (%.1f s)", url, f"{path.stat().st_size:,}", digest,
             time.monotonic() - t0)
    bucket, key = split_url(url)
    modified = s3_client().head_object(Bucket=bucket, Key=key)["LastModified"].timestamp()
    return Source(kind="s3", name=path.stem, url=url, path=path, revision=f"sha256-{digest[:16]}", sha256=digest,
                  size=path.stat().st_size, revision_date=utc(modified))


class _DownloadProgress(Progress):
    """Logs a download's progress (percent, MB/s) at every 10%, from the size of huggingface_hub's
    .incomplete file, so a task log shows a multi-GB download moving (its own progress bar is for terminals)."""

    def __init__(self, folder: Path, name: str, size: int, every_s: float = 0.5) -> None:
        import threading

        super().__init__(log, "downloading", name, size)
        self.folder, self.every_s = folder, every_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _bytes(self) -> int:
        parts = list(self.folder.rglob("*.incomplete")) if self.folder.exists() else []
        return max((p.stat().st_size for p in parts if p.exists()), default=0)

    def _run(self) -> None:
        while not self.stop.wait(self.every_s):
            self.update(self._bytes())

    def __enter__(self) -> _DownloadProgress:
        if self.wanted:
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()


def hub_info(repo_id: str, revision: str | None):
    """The Hub's model info at a revision (branch, tag or sha), with file metadata; errors name the fix."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    revision = revision or "main"
    try:
        return HfApi().model_info(repo_id, revision=revision, files_metadata=True)
    except RepositoryNotFoundError:
        raise InputError(f"{repo_id}: no such Hugging Face repo (or it is private: set the hf token)") from None
    except RevisionNotFoundError:
        raise InputError(f"{repo_id}: revision {revision!r} not found; give a branch, tag or commit sha") from None
    except (HfHubHTTPError, OSError) as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise InputError(f"{repo_id}: the Hub refused access ({status}): a gated or private repo needs a token "
                             f"(the Airflow Variable hf_token) and, for a gated one, its terms accepted") from None
        raise TransientError(f"{repo_id}: the Hub could not be reached or failed ({e}); retried. If it persists, "
                             f"check the network or HF_ENDPOINT") from None


def _nemo_file(info, repo_id: str):
    """The repo's .nemo checkpoint (its Hub file entry, with LFS sha256 and size)."""
    nemo = [s for s in info.siblings or [] if s.rfilename.endswith(".nemo")]
    if not nemo:
        raise InputError(f"{repo_id}@{info.sha}: the repo has no .nemo file; nemo2sherpa converts NeMo checkpoints")
    return nemo[0]


def upstream_revision(source: str, revision: str | None = None) -> Source:
    """What a source resolves to upstream right now, without downloading it: for a registry model or a repo
    id the Hub's commit sha (the scheduled refresh compares it with what is published); for a local file its
    content hash, and for an s3:// object too (read into a temporary folder: an ETag is no content hash)."""
    import tempfile

    kind, value = classify(source)
    if kind == "local":  # resolving a local file reads it, nothing more
        return replace(resolve_source(source, revision, Path(".")), source=source)
    if kind == "s3":
        with tempfile.TemporaryDirectory(prefix="nemo2sherpa-s3-") as tmp:
            return replace(download_s3(value, Path(tmp)), source=source, path=None)
    entry = load_registry()[value] if kind == "registry" else RegistryEntry(repo_id=value)
    info = hub_info(entry.repo_id, revision or entry.revision)
    _nemo_file(info, entry.repo_id)
    name = value if kind == "registry" else value.split("/")[-1]
    return Source(source=source, kind=kind, name=name, repo_id=entry.repo_id, revision=info.sha)


def download_hub(repo_id: str, revision: str | None, download_dir: Path) -> Source:
    """Download a Hub repo's .nemo at a revision (resumable, sha256 checked against the Hub's LFS metadata)."""
    from huggingface_hub import hf_hub_download

    info = hub_info(repo_id, revision)
    f = _nemo_file(info, repo_id)
    t0 = time.monotonic()
    with _DownloadProgress(Path(download_dir), f.rfilename, f.size or 0):
        path = Path(hf_hub_download(repo_id, f.rfilename, revision=info.sha, local_dir=str(download_dir)))
    dt = time.monotonic() - t0
    size = path.stat().st_size
    digest = sha256_file(path)
    want = getattr(getattr(f, "lfs", None), "sha256", None)
    if want and want != digest:
        path.unlink()
        raise TransientError(f"{repo_id}/{f.rfilename}: sha256 {digest} != Hub's {want}; the download is corrupt "
                             f"(removed); retried")
    log.info("downloaded %s/%s@%s: %s bytes in %.1f s (%.1f MB/s)", repo_id, f.rfilename, info.sha, f"{size:,}", dt,
             size / 1e6 / max(dt, 1e-6))
    when = getattr(info, "last_modified", None)
    return Source(kind="hub", name=repo_id.split("/")[-1], repo_id=repo_id, path=path, revision=info.sha,
                  sha256=digest, size=size, revision_date=utc(when.timestamp()) if when else None)
