"""A loopback HTTP server that speaks the part of the Hugging Face Hub protocol a download uses.

huggingface_hub is pointed at it with its own setting, HF_ENDPOINT. It serves:
- GET  /api/models/{owner}/{name}/revision/{rev}   model info: commit sha, siblings with LFS sha256/size
- HEAD /{owner}/{name}/resolve/{rev}/{file}        X-Repo-Commit, X-Linked-Etag, X-Linked-Size
- GET  /{owner}/{name}/resolve/{rev}/{file}        the bytes, honouring Range (206 + Content-Range)
Errors carry the Hub's X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound), which
huggingface_hub turns into its typed exceptions. `drop_after` makes the first GET of a file stop
after that many bytes (the connection closes mid-body), to prove a download resumes; `corrupt`
serves other bytes than the LFS sha256 promises. Every request is recorded in `requests`.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Repo:
    files: dict[str, Path]
    commit: str
    revisions: tuple[str, ...] = ("main",)
    corrupt: bool = False
    sha256: dict[str, str] = field(default_factory=dict)
    token: str | None = None  # private repo: requests must carry "Authorization: Bearer <token>"
    modified: str = "2026-11-01T00:00:00.000Z"  # the commit's date, as the Hub's lastModified gives it


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[dict] = []
        self.drop_after: int | None = None
        self._dropped: set[str] = set()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                hub._handle(self, head=True)

            def do_GET(self) -> None:
                hub._handle(self, head=False)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def add_repo(self, repo_id: str, files: dict[str, Path], commit: str, revisions=("main",), corrupt=False,
                 token: str | None = None, modified: str = "2026-11-01T00:00:00.000Z") -> None:
        shas = {}
        for name, path in files.items():
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while b := f.read(8 << 20):
                    h.update(b)
            shas[name] = h.hexdigest()
        self.repos[repo_id] = Repo(files, commit, tuple(revisions) + (commit,), corrupt, shas, token, modified)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- protocol -------------------------------------------------------------------------------
    def _error(self, h, code: int, error_code: str) -> None:
        body = json.dumps({"error": error_code}).encode()
        h.send_response(code)
        h.send_header("X-Error-Code", error_code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        path = h.path.split("?", 1)[0]
        self.requests.append({"method": "HEAD" if head else "GET", "path": path, "range": h.headers.get("Range"),
                              "auth": h.headers.get("Authorization")})
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", path)
        if m:
            return self._info(h, m.group(1), m.group(2))
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m:
            return self._file(h, m.group(1), m.group(2), m.group(3), head)
        self._error(h, 404, "EntryNotFound")

    def _repo(self, h, repo_id: str, rev: str) -> Repo | None:
        repo = self.repos.get(repo_id)
        if repo is not None and repo.token and h.headers.get("Authorization") != f"Bearer {repo.token}":
            repo = None  # the Hub answers a private repo without the right token as if it did not exist
        if repo is None:
            self._error(h, 404 if not h.headers.get("Authorization") else 401, "RepoNotFound")
            return None
        if rev not in repo.revisions:
            self._error(h, 404, "RevisionNotFound")
            return None
        return repo

    def _info(self, h, repo_id: str, rev: str) -> None:
        repo = self._repo(h, repo_id, rev)
        if repo is None:
            return
        siblings = [{"rfilename": n, "size": p.stat().st_size, "blobId": repo.sha256[n][:40],
                     "lfs": {"sha256": repo.sha256[n], "size": p.stat().st_size, "pointerSize": 134}}
                    for n, p in repo.files.items()]
        body = json.dumps({"id": repo_id, "modelId": repo_id, "sha": repo.commit, "private": False,
                           "lastModified": repo.modified,
                           "siblings": siblings, "tags": [], "downloads": 0, "likes": 0}).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _file(self, h, repo_id: str, rev: str, name: str, head: bool) -> None:
        repo = self._repo(h, repo_id, rev)
        if repo is None:
            return
        if name not in repo.files:
            return self._error(h, 404, "EntryNotFound")
        path = repo.files[name]
        size = path.stat().st_size
        start = 0
        rng = h.headers.get("Range")
        if rng and not head:
            start = int(re.fullmatch(r"bytes=(\d+)-\d*", rng).group(1))
        h.send_response(206 if start else 200)
        h.send_header("X-Repo-Commit", repo.commit)
        h.send_header("X-Linked-Etag", f'"{repo.sha256[name]}"')
        h.send_header("ETag", f'"{repo.sha256[name]}"')
        h.send_header("X-Linked-Size", str(size))
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Length", str(size - start))
        if start:
            h.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        h.end_headers()
        if head:
            return
        limit = size - start
        key = f"{repo_id}/{name}"
        if self.drop_after is not None and key not in self._dropped:
            self._dropped.add(key)
            limit = min(limit, self.drop_after)
        sent = 0
        with open(path, "rb") as f:
            f.seek(start)
            while sent < limit:
                chunk = f.read(min(1 << 20, limit - sent))
                if not chunk:
                    break
                if repo.corrupt:
                    chunk = bytes(b ^ 0xFF for b in chunk[:1]) + chunk[1:]
                h.wfile.write(chunk)
                sent += len(chunk)
        self.requests[-1]["sent"] = sent
        if sent < size - start:
            h.close_connection = True  # mid-body: the client sees the connection end early
