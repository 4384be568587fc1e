"""A loopback HTTP server that speaks the part of the Hugging Face Hub protocol huggingface_hub uses to download
and to publish: model repos only, as huggingface_hub 2.4 speaks it.

huggingface_hub is pointed at it with its own setting, HF_ENDPOINT (or HfApi(endpoint=hub.url)). It serves:
Reads (a private repo answers only its `token` or a token of its owner; others get RepoNotFound)
- GET  /api/models/{owner}/{name}[/revision/{rev}]   model info: commit sha, private, siblings (size, blobId, LFS)
- GET  /api/models/{owner}/{name}/tree/{rev}[/{dir}] tree listing, ?recursive=; pages of `tree_page_size` (Link)
- POST /api/models/{owner}/{name}/paths-info/{rev}   form paths=...: those paths' tree entries
- HEAD /{owner}/{name}/resolve/{rev}/{file}          X-Repo-Commit, ETag (LFS: sha256 + X-Linked-Etag/-Size;
                                                     else the git blob sha1)
- GET  /{owner}/{name}/resolve/{rev}/{file}          the bytes, honouring Range (206 + Content-Range)
- GET  /api/whoami-v2                                the token's user and organizations
Writes (tokens come from `add_token`: a user, its organizations, write or read-only)
- POST /api/repos/create                      {name, organization, visibility}: a repo whose first commit holds the
                                              Hub's .gitattributes; 409 "You already created this model repo" if it
                                              exists (create_repo(exist_ok=True) swallows that)
- POST /api/validate-yaml                     a README's front matter: always valid
- POST /api/models/{repo}/preupload/{rev}     per file: uploadMode "lfs" (10 MiB or more, a .gitattributes LFS pattern,
                                              or a binary sample) or "regular", the path's current oid (git sha1, or
                                              sha256 for LFS) so the client leaves unchanged files out, shouldIgnore
- POST /{repo}.git/info/lfs/objects/batch     LFS batch, transfer "basic" (never multipart): an upload and a verify
                                              action for each object this repo lacks, none for the ones it holds
- PUT  /lfs-upload/{repo}/{oid}               the object's bytes (400 unless sha256 and size match the batch)
- POST /{repo}.git/info/lfs/objects/verify    {oid, size}: 200 once the object is stored
- POST /api/models/{repo}/commit/{rev}        NDJSON: header, file (base64), lfsFile, deletedFile, deletedFolder lines,
                                              applied at once as a new commit on the branch; recorded in `commits`
- GET  /api/models/{repo}/xet-write-token/... 501: this Hub speaks LFS only. huggingface_hub uploads through Xet
                                              whenever hf_xet is importable (upload_folder, create_commit), whatever
                                              a server answers: a client publishing here needs HF_HUB_DISABLE_XET=1
                                              (or huggingface_hub.constants.HF_HUB_DISABLE_XET = True in-process)
A write without a token (or with one the Hub does not know) gets 401; a read-only token, or a namespace that is neither
the token's user nor one of its organizations (known or not), 403 with the Hub's message. Errors carry the Hub's
X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound) and X-Error-Message, which huggingface_hub turns into its
typed exceptions. `drop_after` makes the first GET of a file stop after that many bytes (the connection closes
mid-body), to prove a download resumes; `corrupt` serves other bytes than the LFS sha256 promises; `fail_next` makes
the next requests other than GET/HEAD answer an error status (throttling, a Hub down). Every request is recorded in
`requests` (method, path, range, auth, status).
"""

from __future__ import annotations

import base64
import codecs
import fnmatch
import hashlib
import json
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_THRESHOLD = 10 << 20  # the Hub keeps files from 10 MiB in LFS, whatever their kind
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in (  # the Hub's, for a new model repo
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*", "*.mlmodel",
    "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb", "*.pickle", "*.pkl", "*.pt",
    "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*", "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz",
    "*.zip", "*.zst", "*tfevents*")).encode()
WRITES = r"^/api/repos/create$|/preupload/|/commit/|\.git/info/lfs/|^/lfs-upload/"  # fail_next's default


def git_blob_oid(data: bytes) -> str:
    """git's id of a blob holding `data` (git hash-object)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


@dataclass(frozen=True)
class Blob:
    """A file of a commit: where its bytes are, and how git knows it (an LFS file's git blob is its pointer)."""
    path: Path
    size: int
    sha256: str
    lfs: bool
    oid: str  # the git blob id: of the bytes, or of the LFS pointer

    @classmethod
    def lfs_file(cls, path: Path, size: int, sha256: str) -> Blob:
        return cls(path, size, sha256, True, git_blob_oid(lfs_pointer(sha256, size)))

    def entry(self, name: str) -> dict:
        """The file as the tree and paths-info endpoints list it."""
        e = {"type": "file", "oid": self.oid, "size": self.size, "path": name}
        if self.lfs:
            e["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": len(lfs_pointer(self.sha256, self.size))}
        return e


@dataclass(frozen=True)
class Token:
    user: str
    orgs: tuple[str, ...] = ()
    write: bool = True

    def owns(self, namespace: str) -> bool:
        return namespace == self.user or namespace in self.orgs


@dataclass
class Repo:
    """A repo. `files`, `sha256` and `commit` describe the head of main (a repo made by add_repo has one commit,
    every one of its `revisions` names it); `refs` and `trees` hold every branch and every commit."""
    files: dict[str, Path]
    commit: str
    revisions: tuple[str, ...] = ("main",)  # every name that resolves: branches, tags, commit shas
    corrupt: bool = False
    sha256: dict[str, str] = field(default_factory=dict)
    token: str | None = None  # private repo: requests must carry "Authorization: Bearer <token>" (or an owner's token)
    modified: str = "2026-11-01T00:00:00.000Z"  # the head commit's date, as the Hub's lastModified gives it
    private: bool = False
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit sha
    trees: dict[str, dict[str, Blob]] = field(default_factory=dict)  # commit sha -> path -> Blob
    lfs_objects: set[str] = field(default_factory=set)  # sha256 of the LFS objects this repo holds

    def resolve(self, rev: str) -> str | None:
        return self.refs.get(rev) or (rev if rev in self.trees else None)

    def _sync(self) -> None:
        """`files`, `sha256`, `commit`, `revisions` from `refs` and `trees` after a commit."""
        self.revisions = tuple(self.refs) + tuple(self.trees)
        if "main" in self.refs:
            self.commit = self.refs["main"]
            tree = self.trees[self.commit]
            self.files = {n: b.path for n, b in tree.items()}
            self.sha256 = {n: b.sha256 for n, b in tree.items()}


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[dict] = []
        self.commits: list[dict] = []  # every commit POSTed: repo, revision, sha, parent, message, files, deleted
        self.tokens: dict[str, Token] = {}
        self.drop_after: int | None = None
        self.tree_page_size = 1000  # entries a tree listing page holds (the Hub: 1000)
        self._dropped: set[str] = set()
        self._fail: dict | None = None
        self._objects: dict[str, Path] = {}  # LFS sha256 -> its bytes
        self._pending: dict[tuple[str, str], int] = {}  # (repo, oid) -> size, for uploads a batch announced
        self._lock = threading.Lock()
        self._store: Path | None = None
        self._connections: set = set()  # open keep-alive connections, closed when the Hub stops
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a) -> None:  # quiet
                pass

            def setup(self) -> None:
                super().setup()
                hub._connections.add(self.connection)

            def finish(self) -> None:
                hub._connections.discard(self.connection)
                super().finish()

            def send_response(self, code, message=None) -> None:
                if getattr(self, "record", None) is not None:
                    self.record["status"] = code
                super().send_response(code, message)

            def do_HEAD(self) -> None:
                hub._handle(self, "HEAD")

            def do_GET(self) -> None:
                hub._handle(self, "GET")

            def do_POST(self) -> None:
                hub._handle(self, "POST")

            def do_PUT(self) -> None:
                hub._handle(self, "PUT")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def add_repo(self, repo_id: str, files: dict[str, Path], commit: str, revisions=("main",), corrupt=False,
                 token: str | None = None, modified: str = "2026-11-01T00:00:00.000Z") -> None:
        """A repo of one commit, `commit`, named by each of `revisions`, its files all in LFS."""
        shas = {}
        for name, path in files.items():
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while b := f.read(8 << 20):
                    h.update(b)
            shas[name] = h.hexdigest()
        tree = {n: Blob.lfs_file(Path(p), Path(p).stat().st_size, shas[n]) for n, p in files.items()}
        self._objects.update({b.sha256: b.path for b in tree.values()})
        self.repos[repo_id] = Repo(files, commit, tuple(revisions) + (commit,), corrupt, shas, token, modified,
                                   private=token is not None, refs={r: commit for r in revisions},
                                   trees={commit: tree}, lfs_objects=set(shas.values()))

    def add_token(self, token: str, user: str, orgs=(), write: bool = True) -> None:
        """A token the Hub knows: it acts as `user`, a member of `orgs`; `write=False` for a read-only token."""
        self.tokens[token] = Token(user, tuple(orgs), write)

    def fail_next(self, n: int = 1, status: int = 503, match: str = WRITES, retry_after: int | None = None) -> None:
        """The next `n` requests other than GET/HEAD whose path matches the regex `match` (by default the write
        endpoints: create, preupload, LFS batch/upload/verify, commit) answer `status` (with Retry-After:
        `retry_after` if given) and change nothing."""
        self._fail = {"n": n, "status": status, "match": re.compile(match), "retry_after": retry_after}

    def __enter__(self) -> FakeHub:
        self._store = Path(tempfile.mkdtemp(prefix="fakehub-"))
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        for conn in list(self._connections):  # a client's pooled connection must not reach a stopped Hub
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        shutil.rmtree(self._store, ignore_errors=True)

    # --- protocol -------------------------------------------------------------------------------
    def _send(self, h, code: int, payload=None, headers: dict | None = None,
              content_type: str = "application/json") -> None:
        body = b"" if payload is None else payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        h.send_response(code)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def _error(self, h, code: int, error_code: str | None = None, message: str | None = None,
               headers: dict | None = None) -> None:
        hdrs = dict(headers or {})
        if error_code:
            hdrs["X-Error-Code"] = error_code
        if message:
            hdrs["X-Error-Message"] = message
        self._send(h, code, {"error": message or error_code}, hdrs)

    def _chunks(self, h):
        """The request body, piece by piece (Content-Length or chunked)."""
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while (size := int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)) > 0:
                while size:
                    piece = h.rfile.read(min(size, 1 << 20))
                    if not piece:
                        raise ConnectionError("request body ended early")
                    size -= len(piece)
                    yield piece
                h.rfile.readline()
            while h.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return
        left = int(h.headers.get("Content-Length") or 0)
        while left:
            piece = h.rfile.read(min(left, 1 << 20))
            if not piece:
                raise ConnectionError("request body ended early")
            left -= len(piece)
            yield piece

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(h.path)
        path, query = url.path, parse_qs(url.query)
        h.record = {"method": method, "path": path, "range": h.headers.get("Range"),
                    "auth": h.headers.get("Authorization")}
        self.requests.append(h.record)
        if method in ("GET", "HEAD"):
            return self._read(h, method, path, query)
        upload = re.fullmatch(r"/lfs-upload/([^/]+/[^/]+)/([0-9a-f]{64})", path) if method == "PUT" else None
        fault = self._take_fault(path)
        if fault or not upload:
            body = b"".join(self._chunks(h))  # read before answering: the connection carries the next request
        if fault:
            status, retry_after = fault
            return self._error(h, status, message=f"FakeHub.fail_next: {status} {HTTPStatus(status).phrase}",
                               headers={"Retry-After": str(retry_after)} if retry_after is not None else None)
        if upload:
            return self._lfs_put(h, upload.group(1), upload.group(2))
        if method != "POST":
            return self._error(h, 405, message=f"{method} {path} is not served by FakeHub")
        if path == "/api/repos/create":
            return self._create_repo(h, body)
        if path == "/api/validate-yaml":
            return self._send(h, 200, {"errors": [], "warnings": []})
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit|paths-info)/([^/]+)", path)
        if m:
            repo_id, what, rev = m.group(1), m.group(2), unquote(m.group(3))
            if what == "preupload":
                return self._preupload(h, repo_id, rev, body)
            if what == "commit":
                return self._commit(h, repo_id, rev, body, query)
            return self._paths_info(h, repo_id, rev, body)
        m = re.fullmatch(r"/([^/]+/[^/]+)\.git/info/lfs/objects/(batch|verify)", path)
        if m:
            return (self._lfs_batch if m.group(2) == "batch" else self._lfs_verify)(h, m.group(1), body)
        self._error(h, 404, message=f"POST {path} is not served by FakeHub")

    def _take_fault(self, path: str) -> tuple[int, int | None] | None:
        with self._lock:
            f = self._fail
            if f is None or f["n"] <= 0 or not f["match"].search(path):
                return None
            f["n"] -= 1
            return f["status"], f["retry_after"]

    def _read(self, h, method: str, path: str, query: dict) -> None:
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
        if m and method == "GET":
            return self._info(h, m.group(1), unquote(m.group(2) or "main"))
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.+))?", path)
        if m and method == "GET":
            return self._tree(h, m.group(1), unquote(m.group(2)), unquote(m.group(3) or ""), query)
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m:
            return self._file(h, m.group(1), unquote(m.group(2)), unquote(m.group(3)), method == "HEAD")
        if path == "/api/whoami-v2" and method == "GET":
            return self._whoami(h)
        if re.fullmatch(r"/api/models/[^/]+/[^/]+/xet-(read|write)-token(/.*)?", path):
            return self._error(h, 501, message="FakeHub speaks LFS only, not Xet: run huggingface_hub with "
                                               "HF_HUB_DISABLE_XET=1")
        self._error(h, 404, "EntryNotFound")

    # --- who may do what ------------------------------------------------------------------------
    def _token(self, h) -> tuple[str | None, Token | None]:
        """The request's bearer token, and what the Hub knows of it (None: unknown)."""
        auth = h.headers.get("Authorization") or ""
        raw = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        return raw, self.tokens.get(raw) if raw else None

    def _can_read(self, h, repo_id: str, repo: Repo) -> bool:
        if not repo.private:
            return True
        raw, tok = self._token(h)
        return (repo.token is not None and raw == repo.token) or (tok is not None and tok.owns(repo_id.split("/")[0]))

    def _known(self, namespace: str) -> bool:
        return any(t.owns(namespace) for t in self.tokens.values())

    def _whom(self, tok: Token, namespace: str) -> str:
        if not self._known(namespace):
            return f'there is no user or organization "{namespace}" on this Hub'
        return f"the token is {tok.user}'s, a member of {', '.join(tok.orgs) or 'no organization'}"

    def _writer(self, h) -> Token | None:
        """The known token of a write request; else a 401 answered."""
        raw, tok = self._token(h)
        if raw is None:
            self._error(h, 401, message="Invalid username or password.")
        elif tok is None:
            self._error(h, 401, message="Invalid credentials in Authorization header")
        return tok

    def _writable(self, h, repo_id: str) -> Repo | None:
        """The repo a write request may change; else 401 (no or unknown token), 404 (no repo, or a private one the
        token cannot see) or 403 (a read-only token, or a namespace not the token's) answered."""
        tok = self._writer(h)
        if tok is None:
            return None
        repo = self.repos.get(repo_id)
        if repo is None or not self._can_read(h, repo_id, repo):
            self._error(h, 404, "RepoNotFound", "Repository not found")
            return None
        namespace = repo_id.split("/")[0]
        if not tok.write:
            self._error(h, 403, message=f"You don't have the rights to write to {repo_id}: this token is read-only "
                                        f"(role read); a write token is needed")
        elif not tok.owns(namespace):
            self._error(h, 403, message=f"You don't have the rights to write to {repo_id} "
                                        f"({self._whom(tok, namespace)})")
        else:
            return repo
        return None

    # --- reads ----------------------------------------------------------------------------------
    def _resolve(self, h, repo_id: str, rev: str) -> tuple[Repo, str] | None:
        repo = self.repos.get(repo_id)
        if repo is not None and not self._can_read(h, repo_id, repo):
            repo = None  # the Hub answers a private repo without the right token as if it did not exist
        if repo is None:
            self._error(h, 404 if not h.headers.get("Authorization") else 401, "RepoNotFound", "Repository not found")
            return None
        sha = repo.resolve(rev)
        if sha is None:
            self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return None
        return repo, sha

    def _info(self, h, repo_id: str, rev: str) -> None:
        got = self._resolve(h, repo_id, rev)
        if got is None:
            return
        repo, sha = got
        siblings = [{"rfilename": n, "size": b.size, "blobId": b.oid} | (
            {"lfs": {"sha256": b.sha256, "size": b.size, "pointerSize": len(lfs_pointer(b.sha256, b.size))}}
            if b.lfs else {}) for n, b in sorted(repo.trees[sha].items())]
        self._send(h, 200, {"_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id, "modelId": repo_id,
                            "author": repo_id.split("/")[0], "sha": sha, "private": repo.private, "disabled": False,
                            "gated": False, "lastModified": repo.modified, "createdAt": repo.modified,
                            "siblings": siblings, "tags": [], "downloads": 0, "likes": 0})

    @staticmethod
    def _entries(tree: dict[str, Blob]) -> dict[str, dict]:
        """Every file and folder of a tree, as the tree endpoint lists them."""
        out = {name: b.entry(name) for name, b in tree.items()}
        folders: dict[str, list[str]] = {}
        for name, b in tree.items():
            parts = name.split("/")
            for i in range(1, len(parts)):
                folders.setdefault("/".join(parts[:i]), []).append(f"{name}\0{b.oid}")
        for d, items in folders.items():
            out[d] = {"type": "directory", "oid": hashlib.sha1("\n".join(sorted(items)).encode()).hexdigest(),
                      "size": 0, "path": d}
        return out

    def _tree(self, h, repo_id: str, rev: str, sub: str, query: dict) -> None:
        got = self._resolve(h, repo_id, rev)
        if got is None:
            return
        repo, sha = got
        entries = self._entries(repo.trees[sha])
        sub = sub.strip("/")
        if sub and entries.get(sub, {}).get("type") != "directory":
            return self._error(h, 404, "EntryNotFound", f"{sub} is not a folder of {repo_id}@{sha}",
                               headers={"X-Repo-Commit": sha})
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        inside = [e for p, e in sorted(entries.items()) if (not sub or p.startswith(sub + "/"))
                  and (recursive or p.rpartition("/")[0] == sub)]
        start = int(query.get("cursor", ["0"])[0])
        page = inside[start:start + self.tree_page_size]
        headers = {}
        if start + self.tree_page_size < len(inside):
            nxt = (f"{self.url}{h.path.split('?')[0]}?recursive={str(recursive).lower()}"
                   f"&expand={query.get('expand', ['false'])[0]}&cursor={start + self.tree_page_size}")
            headers["Link"] = f'<{nxt}>; rel="next"'
        self._send(h, 200, page, headers)

    def _paths_info(self, h, repo_id: str, rev: str, body: bytes) -> None:
        got = self._resolve(h, repo_id, rev)
        if got is None:
            return
        repo, sha = got
        entries = self._entries(repo.trees[sha])
        paths = parse_qs(body.decode()).get("paths", [])
        self._send(h, 200, [entries[p.strip("/")] for p in paths if p.strip("/") in entries])

    def _file(self, h, repo_id: str, rev: str, name: str, head: bool) -> None:
        got = self._resolve(h, repo_id, rev)
        if got is None:
            return
        repo, sha = got
        blob = repo.trees[sha].get(name)
        if blob is None:
            return self._error(h, 404, "EntryNotFound", "Entry not found", headers={"X-Repo-Commit": sha})
        size = blob.size
        start = 0
        rng = h.headers.get("Range")
        if rng and not head:
            start = int(re.fullmatch(r"bytes=(\d+)-\d*", rng).group(1))
        h.send_response(206 if start else 200)
        h.send_header("X-Repo-Commit", sha)
        if blob.lfs:
            h.send_header("X-Linked-Etag", f'"{blob.sha256}"')
            h.send_header("X-Linked-Size", str(size))
        h.send_header("ETag", f'"{blob.sha256 if blob.lfs else blob.oid}"')
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
        with open(blob.path, "rb") as f:
            f.seek(start)
            while sent < limit:
                chunk = f.read(min(1 << 20, limit - sent))
                if not chunk:
                    break
                if repo.corrupt:
                    chunk = bytes(b ^ 0xFF for b in chunk[:1]) + chunk[1:]
                h.wfile.write(chunk)
                sent += len(chunk)
        h.record["sent"] = sent
        if sent < size - start:
            h.close_connection = True  # mid-body: the client sees the connection end early

    def _whoami(self, h) -> None:
        tok = self._writer(h)
        if tok is None:
            return
        self._send(h, 200, {"type": "user", "name": tok.user, "fullname": tok.user,
                            "orgs": [{"type": "org", "name": o, "fullname": o} for o in tok.orgs],
                            "auth": {"type": "access_token", "accessToken": {
                                "displayName": "fakehub", "role": "write" if tok.write else "read"}}})

    # --- writes ---------------------------------------------------------------------------------
    def _store_bytes(self, data: bytes) -> Blob:
        sha = hashlib.sha256(data).hexdigest()
        path = self._store / sha
        if not path.exists():
            tmp = self._store / f"tmp-{uuid.uuid4().hex}"
            tmp.write_bytes(data)
            tmp.replace(path)
        return Blob(path, len(data), sha, False, git_blob_oid(data))

    def _create_repo(self, h, body: bytes) -> None:
        tok = self._writer(h)
        if tok is None:
            return
        req = json.loads(body or b"{}")
        name, namespace = req.get("name") or "", req.get("organization") or tok.user
        if (req.get("type") or "model") != "model":
            return self._error(h, 400, message=f"FakeHub serves model repos only, not {req.get('type')!r}")
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]*", name) or not re.fullmatch(r"[A-Za-z0-9][\w.-]*", namespace):
            return self._error(h, 400, message=f"Invalid repo name: {namespace}/{name}")
        repo_id = f"{namespace}/{name}"
        if not tok.owns(namespace):
            return self._error(h, 403, message=f'You don\'t have the rights to create a model under the namespace '
                                               f'"{namespace}" ({self._whom(tok, namespace)})')
        if not tok.write:
            return self._error(h, 403, message=f'You don\'t have the rights to create a model under the namespace '
                                               f'"{namespace}": this token is read-only (role read)')
        with self._lock:
            if repo_id in self.repos:
                return self._send(h, 409, {"error": "You already created this model repo",
                                           "url": f"{self.url}/{repo_id}"})
            blob = self._store_bytes(GITATTRIBUTES)
            sha = hashlib.sha1(f"{repo_id}\0initial commit\0{time.time_ns()}".encode()).hexdigest()
            repo = Repo({}, sha, private=req.get("visibility") == "private", modified=_now(),
                        refs={"main": sha}, trees={sha: {".gitattributes": blob}})
            repo._sync()
            self.repos[repo_id] = repo
        self._send(h, 200, {"url": f"{self.url}/{repo_id}", "name": repo_id, "id": sha[:24]})

    def _wants_lfs(self, tree: dict[str, Blob], path: str, size: int, sample: bytes) -> bool:
        if size >= LFS_THRESHOLD:
            return True
        attrs = tree.get(".gitattributes")
        for line in (attrs.path.read_text().splitlines() if attrs is not None and not attrs.lfs else []):
            pattern, _, rest = line.strip().partition(" ")
            if "filter=lfs" in rest and fnmatch.fnmatch(path if "/" in pattern else path.rsplit("/", 1)[-1],
                                                        pattern.replace("**/", "")):
                return True
        if b"\0" in sample:
            return True
        try:  # binary: not UTF-8 (a sample shorter than the file may end mid-character)
            codecs.getincrementaldecoder("utf-8")().decode(sample, final=len(sample) >= size)
        except UnicodeDecodeError:
            return True
        return False

    def _preupload(self, h, repo_id: str, rev: str, body: bytes) -> None:
        repo = self._writable(h, repo_id)
        if repo is None:
            return
        sha = repo.resolve(rev)
        if sha is None:
            return self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev}")
        tree = repo.trees[sha]
        files = []
        for f in json.loads(body)["files"]:
            lfs = self._wants_lfs(tree, f["path"], int(f["size"]), base64.b64decode(f.get("sample") or ""))
            entry = {"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False}
            if (cur := tree.get(f["path"])) is not None:
                entry["oid"] = cur.sha256 if cur.lfs else cur.oid
            files.append(entry)
        self._send(h, 200, {"files": files, "commitOid": sha})

    def _lfs_batch(self, h, repo_id: str, body: bytes) -> None:
        repo = self._writable(h, repo_id)
        if repo is None:
            return
        req = json.loads(body)
        if req.get("operation") != "upload":
            return self._error(h, 400, message="FakeHub's LFS batch serves uploads only")
        objects = []
        for o in req.get("objects", []):
            oid, size = o["oid"], int(o["size"])
            if oid in repo.lfs_objects:
                objects.append({"oid": oid, "size": size})  # held: no actions, the client sends nothing
                continue
            self._pending[(repo_id, oid)] = size
            objects.append({"oid": oid, "size": size, "authenticated": True, "actions": {
                "upload": {"href": f"{self.url}/lfs-upload/{repo_id}/{oid}", "header": {}},
                "verify": {"href": f"{self.url}/{repo_id}.git/info/lfs/objects/verify", "header": {}}}})
        self._send(h, 200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                   content_type="application/vnd.git-lfs+json")

    def _lfs_put(self, h, repo_id: str, oid: str) -> None:
        size = self._pending.get((repo_id, oid))
        if size is None or repo_id not in self.repos:
            for _ in self._chunks(h):
                pass
            return self._error(h, 404, message=f"no upload of {oid} to {repo_id} was announced by an LFS batch")
        tmp = self._store / f"tmp-{uuid.uuid4().hex}"
        digest, n = hashlib.sha256(), 0
        with open(tmp, "wb") as f:
            for piece in self._chunks(h):
                digest.update(piece)
                n += len(piece)
                f.write(piece)
        if digest.hexdigest() != oid or n != size:
            tmp.unlink()
            return self._error(h, 400, message=f"the upload is not the object announced: sha256 {digest.hexdigest()}, "
                                               f"{n} bytes; expected {oid}, {size} bytes")
        path = self._store / oid
        tmp.replace(path)
        with self._lock:
            self._objects[oid] = path
            self.repos[repo_id].lfs_objects.add(oid)
            self._pending.pop((repo_id, oid), None)
        self._send(h, 200, None, {"ETag": f'"{oid}"'})

    def _lfs_verify(self, h, repo_id: str, body: bytes) -> None:
        repo = self.repos.get(repo_id)
        req = json.loads(body or b"{}")
        oid = req.get("oid")
        if repo is None or oid not in repo.lfs_objects or self._objects[oid].stat().st_size != req.get("size"):
            return self._error(h, 404, message=f"LFS object {oid} ({req.get('size')} bytes) is not stored "
                                               f"for {repo_id}")
        self._send(h, 200, {"message": "Everything is fine"})

    def _commit(self, h, repo_id: str, rev: str, body: bytes, query: dict) -> None:
        repo = self._writable(h, repo_id)
        if repo is None:
            return
        if query.get("create_pr", ["0"])[0] not in ("0", "false"):
            return self._error(h, 400, message="FakeHub does not open pull requests (create_pr)")
        try:
            lines = [json.loads(x) for x in body.splitlines() if x.strip()]
        except ValueError as e:
            return self._error(h, 400, message=f"the commit is not NDJSON: {e}")
        if not lines or lines[0].get("key") != "header":
            return self._error(h, 400, message="the commit's first line must be its header")
        header = lines[0]["value"]
        with self._lock:
            parent = repo.refs.get(rev)
            if parent is None:
                return self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev} (commits go to a branch)")
            if header.get("parentCommit") not in (None, parent):
                return self._error(h, 412, message="A commit has happened since. Please refresh and try again.")
            tree, files, deleted = dict(repo.trees[parent]), [], []
            for line in lines[1:]:
                key, v = line.get("key"), line.get("value") or {}
                p = v.get("path", "")
                if key == "file":
                    data = base64.b64decode(v["content"]) if v.get("encoding") == "base64" else v["content"].encode()
                    tree[p] = self._store_bytes(data)
                    files.append(p)
                elif key == "lfsFile":
                    oid = v.get("oid")
                    if oid not in repo.lfs_objects:
                        return self._error(h, 400, message=f"{p}: LFS object {oid} was never uploaded to {repo_id}")
                    size = self._objects[oid].stat().st_size
                    if v.get("size") not in (None, size):
                        return self._error(h, 400, message=f"{p}: LFS object {oid} is {size} bytes, not {v['size']}")
                    tree[p] = Blob.lfs_file(self._objects[oid], size, oid)
                    files.append(p)
                elif key == "deletedFile":
                    if tree.pop(p, None) is None:
                        return self._error(h, 404, "EntryNotFound", f"A file with this name doesn't exist: {p}")
                    deleted.append(p)
                elif key == "deletedFolder":
                    gone = [n for n in tree if n.startswith(p.rstrip("/") + "/")]
                    if not gone:
                        return self._error(h, 404, "EntryNotFound", f"A folder with this name doesn't exist: {p}")
                    for n in gone:
                        del tree[n]
                    deleted += gone
                else:
                    return self._error(h, 400, message=f"unknown commit operation {key!r}")
            content = "".join(f"{n}\0{b.oid}\n" for n, b in sorted(tree.items()))
            sha = hashlib.sha1(f"{parent}\n{header.get('summary')}\n{header.get('description')}\n{content}".encode()
                               ).hexdigest()
            repo.trees[sha] = tree
            repo.refs[rev] = sha
            repo.modified = _now()
            repo._sync()
            self.commits.append({"repo": repo_id, "revision": rev, "sha": sha, "parent": parent,
                                 "message": header.get("summary"), "description": header.get("description"),
                                 "files": files, "lfs": [p for p in files if p in tree and tree[p].lfs],
                                 "deleted": deleted,
                                 "auth": h.headers.get("Authorization")})
        self._send(h, 200, {"success": True, "commitOid": sha, "commitUrl": f"{self.url}/{repo_id}/commit/{sha}",
                            "hookOutput": "", "pullRequestUrl": None})
