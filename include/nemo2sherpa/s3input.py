"""s3:// inputs: a checkpoint or an evaluation set in the user's S3-compatible bucket, read with boto3.

Credentials come the way boto3 reads them: the AWS_* environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_ENDPOINT_URL for a store that is not AWS, AWS_DEFAULT_REGION) or ~/.aws. From `convert` that is the user's
shell; in the DAG the source task's process gets them in its environment from the run's Airflow connection, resolved
by the worker at run time (the DAG's _credentials), so one code path reads both. Failures are classified once: a missing object or bucket and refused keys are input
errors naming the fix; throttling, 5xx and an endpoint that does not answer are transient (retried).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from .errors import InputError, PermanentError, TransientError
from .progress import Progress

log = logging.getLogger("nemo2sherpa.s3input")

def is_s3(value: str | None) -> bool:
    """Whether a source or evaluation-set value is an s3:// URL."""
    return bool(value) and str(value).strip().startswith("s3://")


def split_url(url: str) -> tuple[str, str]:
    """(bucket, key) of s3://bucket/key; InputError for what is not one."""
    rest = url.strip()[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise InputError(f"{url}: not an s3:// URL with a bucket; write s3://<bucket>/<key>")
    return bucket, key


def client():
    """A boto3 S3 client from the environment; path-style addressing for a custom endpoint (MinIO, rclone, Ceph)."""
    import boto3
    from botocore.config import Config

    custom = bool(os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3"))
    cfg = Config(retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"} if custom else {})
    return boto3.client("s3", config=cfg)


def classified(e: BaseException, what: str = "") -> BaseException:
    """An S3 failure as nemo2sherpa.errors sees it: throttling, 5xx and an unreachable endpoint are transient;
    the store's other refusals (4xx) permanent, a missing object or refused keys named as input to fix;
    anything else unchanged."""
    from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError, NoCredentialsError
    from botocore.exceptions import ReadTimeoutError

    where = f"{what}: " if what else ""
    if isinstance(e, (BotoConnectionError, ReadTimeoutError)):
        return TransientError(f"{where}the S3 endpoint did not answer ({e}); retried. If it persists, check "
                              f"endpoint_url in the connection (AWS_ENDPOINT_URL for convert)")
    if isinstance(e, NoCredentialsError):
        return InputError(f"{where}no S3 credentials: give the DAG run an aws connection (aws_conn_id) or set "
                          f"AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL) for convert")
    if not isinstance(e, ClientError):
        return e
    err, status = e.response.get("Error", {}), e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    code = err.get("Code", "")
    if status >= 500 or status == 429 or code in ("SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
                                                  "InternalError", "ServiceUnavailable", "InternalFailure"):
        return TransientError(f"{where}the S3 store answered {code or status} ({err.get('Message', '')}); retried")
    if code in ("ExpiredToken", "TokenRefreshRequired", "InvalidToken"):
        return PermanentError(f"{where}the S3 store refused the connection's temporary credentials ({code}): put "
                              f"fresh ones in the connection (or AWS_SESSION_TOKEN for convert), then re-run")
    if code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket"):
        return InputError(f"{where}no such object or bucket ({code}); check the s3:// URL")
    if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return InputError(f"{where}the S3 store refused access ({code}); check the connection's keys and the "
                          f"bucket's policy")
    return PermanentError(f"{where}the S3 store refused the request: {code or status} ({err.get('Message', '')})")


def list_keys(s3, url: str) -> list[str]:
    """Every key under an s3:// prefix (a folder: the prefix ends with '/' whether written or not), sorted."""
    bucket, prefix = split_url(url)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    keys: list[str] = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
    except Exception as e:  # noqa: BLE001 - classified
        raise classified(e, url) from None
    return sorted(keys)


def fetch(s3, url: str, dest: Path) -> Path:
    """Download one object to `dest` (through dest.partial, renamed when complete: no partial file behind a
    failure); progress logged for a large one."""
    bucket, key = split_url(url)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".partial")
    t0 = time.monotonic()
    try:
        size = int(s3.head_object(Bucket=bucket, Key=key)["ContentLength"])
        progress = Progress(log, "downloading", url, size)
        done = [0]

        def seen(n: int) -> None:
            done[0] += n
            progress.update(done[0])

        s3.download_file(bucket, key, str(part), Callback=seen)
    except Exception as e:  # noqa: BLE001 - classified
        part.unlink(missing_ok=True)
        raise classified(e, url) from None
    part.rename(dest)
    dt = time.monotonic() - t0
    if size >= 8 << 20:
        log.info("downloaded %s: %s bytes in %.1f s (%.1f MB/s)", url, f"{size:,}", dt, size / 1e6 / max(dt, 1e-6))
    return dest


def object_info(s3, url: str) -> dict[str, Any]:
    """An object's size and ETag, without reading it; classified errors."""
    bucket, key = split_url(url)
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except Exception as e:  # noqa: BLE001 - classified
        raise classified(e, url) from None
    return {"size": int(head["ContentLength"]), "etag": head.get("ETag", "").strip('"')}
