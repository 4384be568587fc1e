"""Stage 7, publish to S3: the S3 target (S3Target, a targets.Target), bundles under
s3://<bucket>/<prefix>/<model>/<revision>-<pipeline version>/, manifest last.

Every object carries its sha256 in metadata; `manifest.json` (names, sizes, sha256s, source,
pipeline version, gate summary) is uploaded only after the store acknowledged every file and every
file was checked, so a reader that finds the manifest finds a complete bundle; then
<prefix>/<model>/latest.json points at it. Takes a boto3 S3 client: the caller decides where the
credentials come from (an Airflow connection in the DAG).

The model files' digests come from validation.json, where validate recorded the files it passed: each
is uploaded with that digest while a thread re-hashes the local file, and a file whose bytes are not
the validated ones is refused (its object deleted, nothing published). So what is published is what
passed the gates, and the hash is not a pass before the upload. Files validate did not see (its own
reports, the benchmark's) are hashed first. No HEAD after an upload: the store's answer to
PutObject/CompleteMultipartUpload is the acknowledgement, and botocore checksums every request body.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import PIPELINE_VERSION, __version__
from .errors import InputError, PermanentError, TransientError
from .progress import Progress
from .records import Benchmark, Compatibility, FileDigest, Latest, Manifest, RunFigures, Source, Validation
from .s3input import classified, split_url
from .source import sha256_file
from .targets import MANIFEST, Download, PublishResult, TargetOptions, published_state
from .variants import ARCHIVE_FORMATS, SHARED, VARIANT_FILES, VARIANTS

log = logging.getLogger("nemo2sherpa.publish")

# This run's reports: rewritten when a variant is added to a published bundle.
REPORTS = (Benchmark.FILE, "benchmark.png", Validation.FILE, Compatibility.FILE, "VALIDATION.md", "README.md")
# The package step's release archives (archive.archive_file: <name>.<the variant's format>).
ARCHIVES = tuple(f"sherpa-onnx-nemo-*.{fmt}" for fmt in ARCHIVE_FORMATS)
# Upload order: every variant's files (variants.VARIANTS), tokens.txt and bpe.vocab, then the reports; a file not in the bundle
# is left out.
PUBLISHED = (*(n for v in VARIANTS.values() for n in v.published), *SHARED, *REPORTS)
# A key prefix: segments of letters, digits, '.', '_' and '-', none of them '.' or '..', none empty (no '//').
PREFIX_PATTERN = r"^(?!.*(^|/)\.{1,2}(/|$))(?!.*//)[A-Za-z0-9._/-]*$"
LATEST = "latest.json"


def bundle_key(prefix: str, model: str, revision: str) -> str:
    """<prefix>/<model>/<revision>-<pipeline version>: a converter fix publishes anew. InputError for a prefix or a
    name that would make a key of '.' or '..' segments, or empty ones (PREFIX_PATTERN)."""
    import re

    parts = [p.strip("/") for p in (prefix, model, f"{revision}-{PIPELINE_VERSION}") if p and p.strip("/")]
    key = "/".join(parts)
    if not re.match(PREFIX_PATTERN, key) or "/" in model.strip("/"):
        raise InputError(f"bundle key {key!r} (prefix {prefix!r}, model {model!r}) has an empty, '.' or '..' segment "
                         f"or other characters than letters, digits, '.', '_', '-': fix the prefix")
    return key


def open_target(url: str, client: Any, options: TargetOptions) -> S3Target:
    """The S3 target at s3://<bucket>[/<prefix>] through a boto3 client (targets.KINDS)."""
    bucket, prefix = split_url(url)
    return S3Target(client, bucket, prefix.strip("/"), options.create_bucket)


@dataclass(frozen=True)
class S3Target:
    """The S3 target (targets.Target): bundles under s3://<bucket>/<bundle_key(prefix, model, revision)>/, through a
    boto3 client; the caller decides where its credentials come from (an Airflow connection in the DAGs and the
    report plugin). `create_bucket`: publish creates a missing bucket, else fails naming it."""

    client: Any
    bucket: str
    prefix: str = ""
    create_bucket: bool = True

    def where(self, model: str, revision: str) -> str:
        """s3://<bucket>/<key>/ of the model's bundle at this revision."""
        return f"s3://{self.bucket}/{bundle_key(self.prefix, model, revision)}/"

    def manifest(self, model: str, revision: str) -> Manifest | None:
        """The manifest published under the bundle's key, or None."""
        return read_manifest(self.client, self.bucket, bundle_key(self.prefix, model, revision))

    def read(self, uri: str) -> bytes | None:
        """The object at an s3:// URI in this target's bucket, or None where there is none."""
        bucket, key = split_url(uri)
        if bucket != self.bucket:
            raise InputError(f"{uri} is not in bucket {self.bucket!r}, which this S3 target reads: read it through "
                             f"a target over bucket {bucket!r}")
        found = _read(self.client, bucket, key)
        return found[0] if found else None

    def download(self, uri: str, model: str, variant: str, expires_s: int) -> Download:
        """The variant's release archive in the bundle at `uri`, as a URL presigned with this target's credentials
        (it works in any browser that reaches the endpoint, for `expires_s` seconds)."""
        from .archive import archive_file

        name = archive_file(model, variant)
        bucket, key = split_url(f"{uri}{name}")
        url = self.client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                                 ExpiresIn=expires_s)
        return Download(name=name, url=url, expires_s=expires_s)

    def publish(self, bundle: Path, source: Source, variants: list[str], run_id: str,
                summary: RunFigures | None = None, force: bool = False) -> PublishResult:
        """publish_run under the bundle's key; the store's failures classified (s3input.classified)."""
        key = bundle_key(self.prefix, source.name, source.revision)
        try:
            return publish_run(self.client, bundle, self.bucket, key, source, variants, run_id, summary,
                               self.create_bucket, force)
        except Exception as e:  # noqa: BLE001 - classified: a 5xx retries, a refusal does not
            c = classified(e)
            if c is e:
                raise
            raise c from e


@dataclass(frozen=True)
class Upload:
    """What publish_bundle did under one key: the bundle's URI, every object written (the files, the manifest,
    latest.json), the manifest's entries, the names already there intact (`skipped`: not uploaded again), the
    names published under validate's digests, the incomplete uploads aborted, whether a manifest was withdrawn."""

    uri: str
    objects: list[str]
    files: list[FileDigest]
    skipped: list[str]
    validated: list[str]
    aborted: list[str]
    withdrawn: bool


def _ensure_bucket(client, bucket: str, create: bool) -> None:
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code in ("404", "NoSuchBucket", "NotFound") and create:
            client.create_bucket(Bucket=bucket)
            log.info("created bucket %s", bucket)
        elif code in ("404", "NoSuchBucket", "NotFound"):
            raise PermanentError(f"bucket {bucket!r} does not exist: create it, or let publish create it (the DAG "
                                 f"param create_bucket)") from None
        elif code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise PermanentError(f"S3 refused access to bucket {bucket!r} ({code}): check the connection's keys "
                                 f"and the bucket's policy") from None
        else:
            raise classified(e) from e


def transfer_config():
    """Multipart above 64 MiB, 16 MiB parts, 8 in flight: memory stays bounded by the part buffers."""
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=16 << 20, max_concurrency=8)


def publish_bundle(client, bundle: Path, bucket: str, key: str, source: Source,
                   summary: RunFigures | None = None, create_bucket: bool = True,
                   existing: Manifest | None = None, run_id: str = "") -> Upload:
    """Upload the bundle under s3://bucket/key/, manifest last, then the model's latest pointer.

    A manifest already there is removed before any file is written (a re-publish, a variant added): while files
    are replaced the key holds no manifest, so none vouches for bytes being overwritten; it is written again last.
    `existing`: the manifest already published there, which lacks a variant this run made. Its files stay as
    they are (this run's copies of them must be the same bytes, else nothing is uploaded) and stay listed; the
    new variant's files and this run's reports are added. `run_id`: recorded in the manifest (a retry of the same
    run knows it published it)."""
    bundle = Path(bundle)
    _ensure_bucket(client, bucket, create_bucket)
    cfg = transfer_config()
    files = [bundle / n for n in PUBLISHED if (bundle / n).exists()] + sorted(
        p for pattern in ARCHIVES for p in bundle.glob(pattern))
    digests = validated_digests(bundle)
    carried = _check_additions(existing, digests, bundle, f"s3://{bucket}/{key}/") if existing else []
    t_all = time.monotonic()
    withdrawn = _withdraw_manifest(client, bucket, key)
    aborted = abort_incomplete(client, bucket, key)  # left by an earlier publish that was killed mid-upload
    try:
        entries, skipped, validated = _upload_all(client, bucket, key, files, cfg, digests)
    except BaseException as e:
        # No manifest was written; leave no half-uploaded parts behind either. (A SIGKILL skips this
        # handler: the next run's abort_incomplete above cleans up after it.)
        try:
            abort_incomplete(client, bucket, key)
        except Exception as e2:  # noqa: BLE001 - the store may be the thing that failed; keep the first error
            log.warning("could not abort incomplete uploads under s3://%s/%s/ (%s); the next run will", bucket, key, e2)
        if _unreachable(e):
            raise PublishError(
                f"the S3 endpoint {client.meta.endpoint_url} stopped answering during the upload to "
                f"s3://{bucket}/{key}/ ({_chain(e)[-1]}), after botocore's own retries. Nothing is published: "
                f"no manifest.json was written. Fix: bring the S3 server back (or correct endpoint_url in the "
                f"connection) and retry the task; files that already arrived intact are not uploaded again."
            ) from e
        c = classified(e)
        if c is not e:
            raise c from e
        raise
    manifest = _manifest(source, entries, carried, existing, summary, run_id)
    body = json.dumps(manifest.to_json(), indent=2).encode()
    (bundle / MANIFEST).write_bytes(body)
    try:
        client.put_object(Bucket=bucket, Key=f"{key}/{MANIFEST}", Body=body, ContentType="application/json")
    except Exception as e:  # noqa: BLE001 - classified: a 5xx retries, a refusal does not
        c = classified(e, f"writing s3://{bucket}/{key}/{MANIFEST} (the files are uploaded; a retry writes it)")
        if c is e:
            raise
        raise c from e
    latest = write_latest(client, bucket, key, manifest)
    uris = [f"s3://{bucket}/{key}/{e.name}" for e in entries] + [f"s3://{bucket}/{key}/{MANIFEST}", latest]
    log.info("published %d files to s3://%s/%s/ in %.1f s (manifest last)", len(entries), bucket, key,
             time.monotonic() - t_all)
    return Upload(uri=f"s3://{bucket}/{key}/", objects=uris, files=entries, skipped=skipped, validated=validated,
                  aborted=aborted, withdrawn=withdrawn)


def _manifest(source: Source, entries: list[FileDigest], carried: list[FileDigest], existing: Manifest | None,
              summary: RunFigures | None, run_id: str) -> Manifest:
    """manifest.json: what is published (every file, with sha256), from what, by which run, each variant's files."""
    return Manifest(
        format="nemo2sherpa-bundle/1", nemo2sherpa=__version__, pipeline_version=PIPELINE_VERSION,
        source=source.identity(("kind", "name", "repo_id", "url", "revision", "revision_date", "sha256", "size")),
        published_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), run_id=run_id, files=entries + carried,
        variants=_variant_files(entries + carried, existing), summary=(summary or RunFigures()).to_json(),
        # what this publish added to the bundle that was there
        added=sorted({e.name for e in entries} - {e.name for e in existing.files}) if existing else None)


def _withdraw_manifest(client, bucket: str, key: str) -> bool:
    """Remove the manifest under key, if there is one, before its files are replaced; whether there was one."""
    if read_manifest(client, bucket, key) is None:
        return False
    client.delete_object(Bucket=bucket, Key=f"{key}/{MANIFEST}")
    log.info("s3://%s/%s/%s withdrawn while its files are replaced; written again last", bucket, key, MANIFEST)
    return True


def read_manifest(client, bucket: str, key: str) -> Manifest | None:
    """The manifest published under key, or None."""
    found = _read_json(client, bucket, f"{key}/{MANIFEST}")
    return Manifest.from_json(found[0], f"s3://{bucket}/{key}/{MANIFEST}") if found else None


def _read_json(client, bucket: str, key: str) -> tuple[dict[str, Any], str] | None:
    """A JSON object and its ETag, or None where there is none."""
    found = _read(client, bucket, key)
    return (json.loads(found[0]), found[1]) if found else None


def _read(client, bucket: str, key: str) -> tuple[bytes, str] | None:
    """An object's bytes and its ETag, or None where there is none."""
    from botocore.exceptions import ClientError

    try:
        obj = client.get_object(Bucket=bucket, Key=key)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound", "NoSuchBucket"):
            return None  # nothing there yet (the bucket is made, or refused, by publish_bundle)
        raise classified(e) from e
    return obj["Body"].read(), obj.get("ETag", "")


def publish_run(client, bundle: Path, bucket: str, key: str, source: Source, variants: list[str],
                run_id: str, summary: RunFigures | None = None, create_bucket: bool = True,
                force: bool = False) -> PublishResult:
    """The publish task: converges on the complete state (every file, the manifest, latest.json) whichever write
    failed before. A bundle already published with every variant asked for is up to date (unless `force`): its
    latest.json is written if it is missing or behind (write_latest); `announce` says whether the caller should emit
    the bundle's asset event (this run published it: a retry after a later write failed, or a fresh publish). One
    that lacks a variant gets it added, its other files untouched."""
    uri = f"s3://{bucket}/{key}/"
    existing = None if force else read_manifest(client, bucket, key)
    missing = published_state(existing, variants) if existing is not None else None
    if existing is not None and missing is None:
        latest = write_latest(client, bucket, key, existing)
        log.info("s3://%s/%s/ already published with %s: up to date; set force to redo", bucket, key,
                 ", ".join(variants))
        return PublishResult(uri=uri, manifest_uri=f"{uri}{MANIFEST}", objects=[latest], skipped=True,
                             announce=bool(run_id) and existing.run_id == run_id)
    if missing:
        log.info("s3://%s/%s/ is %s: adding to it (its other files stay as they are)", bucket, key, missing)
    out = publish_bundle(client, bundle, bucket, key, source, summary, create_bucket, existing, run_id)
    return PublishResult(uri=uri, manifest_uri=f"{uri}{MANIFEST}", objects=out.objects, skipped=False,
                         announce=True, files=out.files, validated=out.validated, added_to=missing)


def _check_additions(existing: Manifest, digests: dict[str, tuple[int, str]], bundle: Path,
                     where: str) -> list[FileDigest]:
    """Before adding to a published bundle: every model file both hold must be the same bytes (else two conversions
    would mix); returns the published entries of files this run did not make, kept as they are."""
    old = {e.name: e for e in existing.files}
    differ = [n for n, (_, sha) in digests.items() if n in old and old[n].sha256 != sha]
    if differ:
        raise PermanentError(f"{where} already holds {', '.join(sorted(differ))} with other bytes than this run "
                             f"made: adding a variant to it would mix two conversions. Nothing was uploaded. Set "
                             f"force to re-publish the whole bundle")
    return [e for n, e in old.items() if n not in REPORTS and not (bundle / n).exists()]


class PublishError(TransientError):
    """The store failed under the upload (transient: retried); the message says what is (not) published."""


class ChangedAfterValidation(PermanentError):
    """A bundle file is not the one validate passed: permanent until validate runs again; nothing is published."""


def _chain(e: BaseException) -> list[BaseException]:
    """The exception and the ones it was raised from or during, outermost first."""
    chain = [e]
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    return chain


def _unreachable(e: BaseException) -> bool:
    """Whether the failure is the store not answering (refused, reset, timed out), not a refusal it sent."""
    from botocore.exceptions import ConnectionError as BotoConnectionError, ReadTimeoutError

    return any(isinstance(x, (BotoConnectionError, ReadTimeoutError, ConnectionError)) for x in _chain(e))


def validated_digests(bundle: Path) -> dict[str, tuple[int, str]]:
    """{name: (size, sha256)} of the files validate passed (validation.json `files`), or {} without one."""
    report = Path(bundle) / Validation.FILE
    if not report.exists():
        return {}
    files = [FileDigest.from_json(f, f"{report} files") for f in json.loads(report.read_text()).get("files", [])]
    return {f.name: (f.size, f.sha256) for f in files}


def _changed(name: str, what: str) -> ChangedAfterValidation:
    return ChangedAfterValidation(
        f"{name} is not the file validate passed ({what}): it changed after validation. Nothing is published: no "
        f"manifest.json was written. Fix: run validate again on this bundle (clear the validate task and what follows "
        f"it), or rebuild the bundle from quantize.")


def _upload_all(client, bucket: str, key: str, files: list[Path], cfg,
                validated: dict[str, tuple[int, str]]) -> tuple[list[FileDigest], list[str], list[str]]:
    """Upload each file with its sha256 in metadata unless an identical object is already there; `validated`
    (validated_digests) gives the model files' digests. Returns the manifest entries, the names skipped, and
    the names published under validate's digests."""
    for f in files:  # every size first: a changed file is refused before anything moves
        if f.name in validated and f.stat().st_size != validated[f.name][0]:
            raise _changed(f.name, f"{f.stat().st_size:,} bytes, validated {validated[f.name][0]:,}")
    entries: list[FileDigest] = []
    skipped: list[str] = []
    with ThreadPoolExecutor(1, thread_name_prefix="sha256") as hashing:
        for f in files:
            size = f.stat().st_size
            digest = validated[f.name][1] if f.name in validated else sha256_file(f)
            entries.append(FileDigest(name=f.name, size=size, sha256=digest))
            if _stored(client, bucket, f"{key}/{f.name}") == (size, digest):
                # A re-run (after a failed or killed publish) keeps what already arrived intact.
                log.info("already there %-20s %14s bytes sha256 %s: not uploaded again", f.name, f"{size:,}", digest[:16])
                skipped.append(f.name)
                continue
            local = hashing.submit(sha256_file, f) if f.name in validated else None  # during the upload
            t0 = time.monotonic()
            client.upload_file(str(f), bucket, f"{key}/{f.name}", Config=cfg,
                               ExtraArgs={"Metadata": {"sha256": digest}}, Callback=_Progress(f.name, size))
            dt = time.monotonic() - t0
            if local is not None and local.result() != digest:
                client.delete_object(Bucket=bucket, Key=f"{key}/{f.name}")  # its metadata would vouch for it
                raise _changed(f.name, f"sha256 {local.result()[:16]}..., validated {digest[:16]}...")
            log.info("uploaded %-20s %14s bytes %7.1f MB/s sha256 %s%s", f.name, f"{size:,}",
                     size / 1e6 / max(dt, 1e-6), digest[:16], " (= validated)" if local is not None else "")
    return entries, skipped, [e.name for e in entries if e.name in validated]


def abort_incomplete(client, bucket: str, key: str) -> list[str]:
    """Abort multipart uploads under the bundle's key that a failed or killed publish left open."""
    from botocore.exceptions import ClientError

    try:
        uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=f"{key}/").get("Uploads", [])
    except ClientError as e:  # a store without the API: nothing we can list, nothing to abort
        if e.response.get("Error", {}).get("Code") == "NoSuchUpload":  # rclone's answer when there are none
            return []
        log.warning("could not list incomplete multipart uploads under s3://%s/%s/ (%s)", bucket, key, e)
        return []
    for u in uploads:
        client.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
    if uploads:
        log.info("aborted %d incomplete multipart upload(s) under s3://%s/%s/: %s", len(uploads), bucket, key,
                 ", ".join(sorted(u["Key"].rsplit("/", 1)[-1] for u in uploads)))
    return [u["Key"] for u in uploads]


class _Progress(Progress):
    """boto3 upload callback (it hands in the bytes sent since its last call, from several threads)."""

    def __init__(self, name: str, size: int) -> None:
        super().__init__(log, "uploading", name, size)
        self.done = 0

    def __call__(self, n: int) -> None:
        with self.lock:
            self.done += n
            done = self.done
        self.update(done)


def _variant_files(entries: list[FileDigest], existing: Manifest | None) -> dict[str, list[str]]:
    """Each variant's published model files (its graphs and, in the big layout, their weights), for the manifest:
    what an app fetches for one variant."""
    names = {e.name for e in entries}
    out = {v: [n for n in x.published if n in names] for v, x in VARIANTS.items()
           if set(VARIANT_FILES[v]) <= names}
    return {**(existing.variants if existing else {}), **out}


def latest_key(key: str) -> str:
    """<prefix>/<model>/latest.json beside the model's bundles."""
    return f"{key.rsplit('/', 1)[0]}/{LATEST}" if "/" in key else LATEST


def write_latest(client, bucket: str, key: str, manifest: Manifest) -> str:
    """The model's `latest` pointer, written only after the bundle's manifest: names the newest published bundle.
    It only moves forward: where it names another bundle of a newer revision (the source's revision_date), it stays
    (publishing an older revision does not move it back). The write is conditional on what was read (If-Match the
    ETag, If-None-Match where there was none); a store that moved it meanwhile makes this read again and decide
    again, once; a store without conditional writes gets a plain one."""
    uri = f"s3://{bucket}/{latest_key(key)}"
    src = manifest.source
    mine = Latest(format="nemo2sherpa-latest/1", model=src.get("name"), revision=src.get("revision"),
                  revision_date=src.get("revision_date"), pipeline_version=manifest.pipeline_version,
                  bundle=f"s3://{bucket}/{key}/", manifest=f"s3://{bucket}/{key}/{MANIFEST}",
                  published_at=manifest.published_at)
    for attempt in range(2):
        found = _read_json(client, bucket, latest_key(key))
        current, etag = (Latest.from_json(found[0], uri), found[1]) if found else (None, "")
        if current and current.bundle == mine.bundle and current.published_at == mine.published_at:
            return uri  # already names this bundle
        if current and current.bundle != mine.bundle and _newer(current, mine):
            log.info("latest pointer %s stays at %s (revision of %s, newer than this one's %s)", uri,
                     current.bundle, current.revision_date, mine.revision_date)
            return uri
        if _put_if(client, bucket, latest_key(key), json.dumps(mine.to_json(), indent=2).encode(), etag):
            log.info("latest pointer %s -> %s", uri, key)
            return uri
        log.info("latest pointer %s changed while it was written: read again", uri)
    raise PublishError(f"{uri} kept changing while it was written (another publish of this model at the same time?); "
                       f"retried")


def _newer(current: Latest, mine: Latest) -> bool:
    """Whether the bundle latest.json names is of a newer revision than this one (unknown dates: not newer)."""
    a, b = current.revision_date, mine.revision_date
    return bool(a and b and a > b)


def _put_if(client, bucket: str, key: str, body: bytes, etag: str) -> bool:
    """Put `body` only if the object is still what was read (ETag; none: still absent). False when the store says it
    changed; a store that does not take conditional writes gets a plain one."""
    from botocore.exceptions import ClientError

    cond = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
    try:
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json", **cond)
        return True
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
            return False
        if code not in ("NotImplemented", "501", "InvalidArgument", "400"):
            raise classified(e) from e
    client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
    return True


def _stored(client, bucket: str, key: str) -> tuple[int, str | None] | None:
    """(size, sha256 from its metadata) of an object, or None if there is none."""
    from botocore.exceptions import ClientError

    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    meta = {k.lower(): v for k, v in head.get("Metadata", {}).items()}  # some servers capitalise keys
    return head["ContentLength"], meta.get("sha256")


def verify_download(local_dir: Path) -> list[str]:
    """Check every file listed in a downloaded manifest.json; returns the names verified."""
    local_dir = Path(local_dir)
    manifest = Manifest.from_json(json.loads((local_dir / MANIFEST).read_text()), str(local_dir / MANIFEST))
    bad = []
    for e in manifest.files:
        p = local_dir / e.name
        if not p.exists() or p.stat().st_size != e.size or sha256_file(p) != e.sha256:
            bad.append(e.name)
    if bad:
        raise RuntimeError(f"files that do not match manifest.json: {bad}")
    return [e.name for e in manifest.files]
