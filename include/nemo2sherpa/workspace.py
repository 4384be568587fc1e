"""The run workspace as an object-store prefix, for workers that share no disk.

With NEMO2SHERPA_WORKSPACE=s3://bucket/prefix each worker keeps a local mirror of a run's workspace
(under NEMO2SHERPA_WORKSPACE_CACHE) and the object store is the hand-over point between tasks: before
a step the worker pulls what changed in the run's prefix, after it pushes what the step wrote. A file
moves only when it changed: each side records (size, mtime) and the object's ETag in a state file
beside the mirror, so a worker that ran the previous step too transfers nothing. Plain functions over
a boto3 client; the DAG hands in one built from an Airflow connection.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

log = logging.getLogger("nemo2sherpa.workspace")

STATE = ".n2s-sync.json"  # per mirror: name -> [size, mtime_ns, etag] as of the last transfer
# The Airflow connections a run may name (its S3 store), for every DAG: declared by the deployment, so that a person
# who may trigger a DAG cannot have a task read any other connection.
S3_CONNECTIONS = tuple(x.strip() for x in os.environ.get("NEMO2SHERPA_S3_CONNECTIONS", "aws_default").split(",")
                       if x.strip()) or ("aws_default",)


def is_remote(workspace: str) -> bool:
    """Whether the workspace is an object-store prefix (s3://...)."""
    return workspace.startswith("s3://")


def split(url: str) -> tuple[str, str]:
    """s3://bucket/some/prefix -> ("bucket", "some/prefix")."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if not bucket:
        from .errors import InputError
        raise InputError(f"workspace {url!r} names no bucket: give s3://<bucket>/<prefix>")
    return bucket, prefix.strip("/")


def run_segment(run_id: str) -> str:
    """A run id as one safe folder or key segment: letters, digits, '_' and '-' only (no '.', so never '..' nor a
    hidden name; no '/'), with a hash of the id itself so that run ids that differ only in other characters stay
    apart. The workspace of a run named '..' is not the parent folder."""
    import hashlib
    import re

    readable = re.sub(r"[^A-Za-z0-9_-]+", "_", run_id).strip("_")[:80] or "run"
    return f"{readable}-{hashlib.sha1(run_id.encode()).hexdigest()[:8]}"


def default_cache() -> Path:
    """Where a worker mirrors an object-store workspace (NEMO2SHERPA_WORKSPACE_CACHE)."""
    return Path(os.environ.get("NEMO2SHERPA_WORKSPACE_CACHE", Path.home() / ".cache" / "nemo2sherpa-workspace"))


def relocate(value: Any, old_root: str, new_root: str) -> Any:
    """A plan (or a step's result) with every path under old_root moved under new_root: each worker's
    mirror may live elsewhere on its own disk."""
    if isinstance(value, dict):
        return {k: relocate(v, old_root, new_root) for k, v in value.items()}
    if isinstance(value, list):
        return [relocate(v, old_root, new_root) for v in value]
    if isinstance(value, str) and old_root != new_root and (value == old_root or value.startswith(old_root + "/")):
        return new_root + value[len(old_root):]
    return value


def mirror(plan: dict[str, Any]) -> Path:
    """This worker's local copy of the run's workspace."""
    return default_cache() / plan["run_key"]


def local_plan(plan: dict[str, Any]) -> dict[str, Any]:
    """The plan with its paths on this worker: unchanged for a shared-disk workspace."""
    return relocate(plan, plan["ws"], str(mirror(plan))) if plan.get("remote") else plan


@contextmanager
def on_this_worker(plan: dict[str, Any], src: dict[str, Any] | None
                   ) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None, Callable[[Any], Any]]]:
    """(plan, source manifest, back): paths moved onto this worker's mirror, and `back` to put a step's
    result in the plan's own terms again, so what goes to XCom means the same on every worker."""
    here = local_plan(plan)
    yield here, relocate(src, plan["ws"], here["ws"]), lambda result: relocate(result, here["ws"], plan["ws"])


def _etag(value: str) -> str:
    return value.strip('"')  # some servers quote it in HEAD and not in LIST


def _state(local: Path) -> dict[str, list]:
    try:
        return json.loads((local / STATE).read_text())
    except (OSError, ValueError):
        return {}


def _save_state(local: Path, state: dict[str, list]) -> None:
    tmp = local / (STATE + ".tmp")
    tmp.write_text(json.dumps(state, indent=0, sort_keys=True))
    os.replace(tmp, local / STATE)


def _local_files(local: Path) -> dict[str, Path]:
    return {p.relative_to(local).as_posix(): p for p in local.rglob("*")
            if p.is_file() and not p.name.startswith(STATE)}


def pull(client, url: str, local: Path) -> dict[str, int]:
    """Bring the mirror up to the prefix: download objects that are new or changed since this mirror saw them."""
    bucket, prefix = split(url)
    local.mkdir(parents=True, exist_ok=True)
    state = _state(local)
    moved = kept = 0
    t0 = time.monotonic()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            name = obj["Key"][len(prefix) + 1:]
            dst = local / name
            rec = state.get(name)
            if rec and dst.exists() and rec[2] == _etag(obj["ETag"]) and [dst.stat().st_size, dst.stat().st_mtime_ns] == rec[:2]:
                kept += 1
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            part = dst.with_name(dst.name + ".part")
            client.download_file(bucket, obj["Key"], str(part))
            os.replace(part, dst)
            st = dst.stat()
            state[name] = [st.st_size, st.st_mtime_ns, _etag(obj["ETag"])]
            moved += obj["Size"]
    _save_state(local, state)
    log.info("workspace pull %s -> %s: %.1f MB fetched, %d files already here, %.1f s", url, local, moved / 1e6,
             kept, time.monotonic() - t0)
    return {"bytes": moved, "kept": kept}


def push(client, url: str, local: Path) -> dict[str, int]:
    """Upload what changed in the mirror since the last transfer, so the next step's worker can pull it."""
    from .publish import transfer_config

    bucket, prefix = split(url)
    state = _state(local)
    cfg = transfer_config()
    moved = kept = 0
    t0 = time.monotonic()
    for name, path in sorted(_local_files(local).items()):
        st = path.stat()
        rec = state.get(name)
        if rec and rec[:2] == [st.st_size, st.st_mtime_ns]:
            kept += 1
            continue
        key = f"{prefix}/{name}"
        client.upload_file(str(path), bucket, key, Config=cfg)
        state[name] = [st.st_size, st.st_mtime_ns, _etag(client.head_object(Bucket=bucket, Key=key)["ETag"])]
        moved += st.st_size
    _save_state(local, state)
    log.info("workspace push %s -> %s: %.1f MB sent, %d files unchanged, %.1f s", local, url, moved / 1e6, kept,
             time.monotonic() - t0)
    return {"bytes": moved, "kept": kept}
