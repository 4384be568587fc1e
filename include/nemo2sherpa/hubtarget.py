"""The Hugging Face Hub target (targets.Target): one model repo a variant, where sherpa-onnx users fetch models.

Each variant goes to `<namespace>/sherpa-onnx-nemo-<model>[-<variant>]` (archive.releases: the name, and the
layout of sherpa-onnx's own NeMo repos: the graphs, external weights where there are any, `tokens.txt`, `bpe.vocab`,
`test_wavs/`, a README.md model card, here with the YAML front matter a Hub user expects), plus `manifest.json`
(records.Manifest: every file's sha256, the source, the pipeline version, the gates' figures). One commit a repo
through huggingface_hub's API (`create_commit`; large files through its LFS protocol, or Xet where hf_xet is
installed and the Hub offers it): the commit is the publish, whole or not at all. Only bytes validate passed are
committed (each model file's sha256 is checked against validation.json before the commit). A repo that already
holds this source revision, pipeline version and these files (the card aside: its figures may differ with the
run's other variants) gets no commit; `force` commits again, and huggingface_hub still leaves out the files the repo
holds. Failures are classified once: the Hub down, throttling (429) or 5xx are transient; a refused token (401), a
namespace the token may not write to or that does not exist (the Hub answers 403 for both) fail at once with the
fix.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import PIPELINE_VERSION, __version__
from .errors import InputError, PermanentError, TransientError
from .records import FileDigest, Manifest, RunFigures, Source
from .targets import MANIFEST, Download, PublishResult, TargetOptions, published_state
from .variants import BASE, VARIANTS

log = logging.getLogger("nemo2sherpa.hub")
SCHEME = "hf://"
FORMAT = "nemo2sherpa-hub-repo/1"
SOURCE_KEYS = ("kind", "name", "repo_id", "url", "revision", "revision_date", "sha256", "size")
MODEL_TAGS = ("sherpa-onnx", "onnx", "nemo", "parakeet", "transducer", "speech-recognition")


def hub_api(token: str | None):
    """huggingface_hub's client for this machine's Hub (HF_ENDPOINT, else huggingface.co), with `token`; its HTTP
    client's line per request left out of the log (the target logs what it did)."""
    import os

    from huggingface_hub import HfApi

    for chatty in ("httpx", "httpx2"):
        logging.getLogger(chatty).setLevel(logging.WARNING)

    return HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token or None)


def front_matter(source: Source, variant: str, license_: str | None, languages: list[str] | None) -> str:
    """The model card's YAML front matter: license (the registry's, as the Hub spells it), library, base model (the
    source repo), task, languages, tags."""
    lines = ["---", f"license: {license_.lower() if license_ else 'other'}", "library_name: sherpa-onnx"]
    if source.repo_id:
        lines.append(f"base_model: {source.repo_id}")
    lines.append("pipeline_tag: automatic-speech-recognition")
    if languages:
        lines += ["language:", *(f"- {x}" for x in languages)]
    tags = [*MODEL_TAGS, "tdt" if "tdt" in (source.repo_id or source.name or "") else "rnnt", variant]
    lines += ["tags:", *(f"- {t}" for t in tags), "---", ""]
    return "\n".join(lines)


def open_target(url: str, api: Any, options: TargetOptions) -> HubTarget:
    """The Hub target at hf://<namespace> (targets.KINDS checked its form) through a huggingface_hub.HfApi."""
    return HubTarget(api, url[len(SCHEME):].strip("/"), options.private, options.reference)


@dataclass(frozen=True)
class HubTarget:
    """The Hub target: `api` is a huggingface_hub.HfApi (its endpoint and token: the caller decides where the
    token comes from; the DAG masks it), `namespace` the user or organization the repos go under, `private` for new
    repos. `reference` is the run's reference folder (the test clips). A registry model's card takes its license
    and languages from the registry."""

    api: Any
    namespace: str
    private: bool = False
    reference: Path | None = None

    def repo_id(self, model: str, variant: str) -> str:
        """The variant's repo: <namespace>/sherpa-onnx-nemo-<model>[-<variant>]."""
        from .archive import archive_name

        return f"{self.namespace}/{archive_name(model, variant)}"

    def where(self, model: str, revision: str) -> str:
        """hf://<namespace>/sherpa-onnx-nemo-<model>/: the base variant's repo (each variant has its own)."""
        return f"{SCHEME}{self.repo_id(model, BASE.name)}/"

    def manifest(self, model: str, revision: str) -> Manifest | None:
        """What the variants' repos hold of this revision and pipeline version, as one manifest (each variant's
        files, every file): None where no repo holds it."""
        held = [(v, m) for v in VARIANTS if (m := self._repo_manifest(self.repo_id(model, v))) is not None
                and _same_source(m, revision)]
        if not held:
            return None
        files = {f.name: f for _, m in held for f in m.files}
        return Manifest(format=FORMAT, pipeline_version=PIPELINE_VERSION, source=held[0][1].source,
                        run_id=held[0][1].run_id, files=list(files.values()),
                        variants={v: names for _, m in held for v, names in m.variants.items()})

    def read(self, uri: str) -> bytes | None:
        """A file of a repo at its head (hf://<namespace>/<repo>/<file>), or None where there is none."""
        if not uri.startswith(SCHEME) or uri.count("/") < 4:
            raise InputError(f"{uri} is not a file of a Hub repo (hf://<namespace>/<repo>/<file>)")
        namespace, repo, name = uri[len(SCHEME):].split("/", 2)
        return self._file(f"{namespace}/{repo}", name)

    def download(self, uri: str, model: str, variant: str, expires_s: int) -> Download:
        """The variant's repo page on the Hub (its files, its card; `git clone` or huggingface_hub from there): a
        private repo needs a Hub account that may read the namespace."""
        repo = self.repo_id(model, variant)
        return Download(name=repo, url=f"{self.endpoint}/{repo}",
                        needs="a Hub sign-in that may read it, where the repo is private")

    def publish(self, bundle: Path, source: Source, variants: list[str], run_id: str,
                summary: RunFigures | None = None, force: bool = False) -> PublishResult:
        """Each variant's release committed to its repo (created where missing), its manifest.json in the same
        commit; a repo that holds these bytes of this revision is left alone (no commit) unless `force`."""
        from .archive import releases
        from .registry import entry_of

        if self.reference is None:
            raise PermanentError("the Hub target needs the run's reference folder (the test clips): give reference")
        t0 = time.monotonic()
        done: dict[str, str] = {}
        ours = False  # a repo already holds this run's commit: a retry after a later write failed
        files: list[FileDigest] = []
        validated: list[str] = []
        missing = published_state(None if force else self.manifest(source.name, source.revision), variants)
        entry = entry_of(source)
        license_, languages = (entry.license, entry.languages) if entry else (None, None)
        matter = {v: front_matter(source, v, license_, languages) for v in variants}
        for rel in releases(Path(bundle), self.reference, variants, source, license_):
            repo_id = f"{self.namespace}/{rel.name}"
            commit, entries, checked, by = self._publish_release(rel, repo_id, matter[rel.variant], source, run_id,
                                                                 summary, force)
            if commit:
                done[repo_id] = commit
            ours = ours or (commit is None and bool(run_id) and by == run_id)
            files += entries
            validated += checked
        log.info("Hub: %d of %d repos committed in %.1f s: %s", len(done), len(variants), time.monotonic() - t0,
                 ", ".join(f"{r}@{c[:12]}" for r, c in done.items()) or "none (every repo up to date)")
        uri = self.where(source.name, source.revision)
        return PublishResult(uri=uri, manifest_uri=f"{uri}{MANIFEST}",
                             objects=[f"{self.endpoint}/{r}/tree/{c}" for r, c in done.items()],
                             skipped=not done, announce=bool(done) or ours, files=files if done else [],
                             validated=validated if done else [], commits=done,
                             added_to=missing if done and missing and missing != "not published yet" else None)

    @property
    def endpoint(self) -> str:
        """The Hub's URL (huggingface.co, or HF_ENDPOINT)."""
        return str(getattr(self.api, "endpoint", "https://huggingface.co")).rstrip("/")

    def _publish_release(self, rel, repo_id: str, matter: str, source: Source, run_id: str, summary: RunFigures | None,
                         force: bool) -> tuple[str | None, list[FileDigest], list[str], str | None]:
        """One variant's commit: its commit sha (None when the repo already held it), the manifest's entries, the
        files committed under validate's digests, the run whose manifest the repo held."""
        from huggingface_hub import CommitOperationAdd

        from .archive import CARD

        ops, entries, checked = [], [], []
        for m in rel.members:
            content: Any = m.path if m.path is not None else ((matter if m.name == CARD else "")
                                                              + (m.text or "")).encode()
            op = CommitOperationAdd(path_in_repo=m.name, path_or_fileobj=str(content) if m.path else content)
            sha = op.upload_info.sha256.hex()
            if m.want is not None:
                if (op.upload_info.size, sha) != tuple(m.want):
                    raise PermanentError(f"{m.name} is not the file validate passed (sha256 {sha[:16]}, validated "
                                         f"{m.want[1][:16]}): it changed after validation; nothing was committed "
                                         f"to {repo_id}. Run validate again on this bundle")
                checked.append(m.name)
            ops.append(op)
            entries.append(FileDigest(name=m.name, size=op.upload_info.size, sha256=sha))
        existing = self._repo_manifest(repo_id)
        if not force and existing is not None and _same_source(existing, source.revision) and \
                _content(existing.files) == _content(entries):
            log.info("%s already holds %s @ %s (pipeline %s), the same files: no commit", repo_id, source.name,
                     source.revision, PIPELINE_VERSION)
            return None, entries, checked, existing.run_id
        manifest = Manifest(format=FORMAT, nemo2sherpa=__version__, pipeline_version=PIPELINE_VERSION,
                            source=source.identity(SOURCE_KEYS), run_id=run_id,
                            published_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), files=entries,
                            variants={rel.variant: list(VARIANTS[rel.variant].published)},
                            summary=(summary or RunFigures()).to_json())
        ops.append(CommitOperationAdd(path_in_repo=MANIFEST, path_or_fileobj=json.dumps(
            manifest.to_json(), indent=1).encode()))
        size = sum(f.size for f in entries)
        with classified(f"publishing {repo_id}", self.namespace):
            self.api.create_repo(repo_id, repo_type="model", private=self.private, exist_ok=True)
            info = self.api.create_commit(repo_id, ops, commit_message=f"{source.name} @ {source.revision}: "
                                          f"{rel.variant}, validated by nemo2sherpa {__version__} (run {run_id})",
                                          revision="main")
        log.info("%s: committed %d files (%s bytes) as %s", repo_id, len(ops), f"{size:,}", info.oid)
        return info.oid, entries, checked, run_id

    def _repo_manifest(self, repo_id: str) -> Manifest | None:
        raw = self._file(repo_id, MANIFEST)
        return Manifest.from_json(json.loads(raw), f"{SCHEME}{repo_id}/{MANIFEST}") if raw else None

    def _file(self, repo_id: str, name: str) -> bytes | None:
        """A file at the repo's head, or None where the repo or the file is not there."""
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                            RevisionNotFoundError)

        with tempfile.TemporaryDirectory() as d, classified(f"reading {repo_id}/{name}", self.namespace):
            try:
                path = hf_hub_download(repo_id, name, revision="main", local_dir=d, endpoint=self.endpoint,
                                       token=getattr(self.api, "token", None))
            except LocalEntryNotFoundError as e:  # the Hub did not answer (huggingface_hub then looks in its cache)
                raise TransientError(f"reading {repo_id}/{name}: the Hub did not answer ({e.__cause__ or e}); "
                                     f"retried. If it persists, check HF_ENDPOINT and the worker's network") from e
            except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError):
                return None
            return Path(path).read_bytes()


def _content(files: list[FileDigest]) -> set[tuple[str, str]]:
    """What makes two publishes of a repo the same: every file's name and sha256 but the card's, whose figures may
    change with the other variants of a run (a run that adds int8 leaves the fp32 repo as it is)."""
    from .archive import CARD

    return {(f.name, f.sha256) for f in files if f.name != CARD}


def _same_source(m: Manifest, revision: str) -> bool:
    return m.source.get("revision") == revision and m.pipeline_version == PIPELINE_VERSION


class classified:
    """A context in which huggingface_hub's failures become nemo2sherpa's classes (nemo2sherpa.errors)."""

    def __init__(self, what: str, namespace: str) -> None:
        self.what, self.namespace = what, namespace

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, e, tb) -> bool:
        if e is None or isinstance(e, (PermanentError, TransientError)):
            return False
        c = hub_error(e, self.what, self.namespace)
        if c is e:
            return False
        raise c from e


def hub_error(e: BaseException, what: str, namespace: str) -> BaseException:
    """A Hub failure as nemo2sherpa.errors sees it; anything else unchanged."""
    from huggingface_hub.errors import HfHubHTTPError

    status = getattr(getattr(e, "response", None), "status_code", None)
    if not isinstance(e, HfHubHTTPError) or status is None:
        if any(c.__name__ in ("ConnectError", "ConnectTimeout", "ReadTimeout", "RemoteProtocolError",
                              "ConnectionError", "TimeoutException") for c in type(e).__mro__):
            return TransientError(f"{what}: the Hub did not answer ({type(e).__name__}: {e}); retried. If it "
                                  f"persists, check HF_ENDPOINT and the worker's network")
        return e
    if status == 429 or status >= 500:
        return TransientError(f"{what}: the Hub answered {status} (throttled or down); retried with backoff")
    if status == 401:
        return InputError(f"{what}: the Hub refused the token (401): put a write token of a user who may write to "
                          f"{namespace!r} in the Airflow Variable hf_token (HF_TOKEN for the CLI)")
    if status == 403:  # the Hub answers a namespace that does not exist as one the token may not write to
        return InputError(f"{what}: the token may not write to {namespace!r} (403: {_message(e)}): the namespace "
                          f"must be the token's user or one of its organizations, and the token a write token; "
                          f"fix hub_namespace (--publish-to hf://<namespace>) or the token")
    if status == 404:
        return InputError(f"{what}: the Hub has no {what.split()[-1]!r} (404: {_message(e)}); check the namespace "
                          f"{namespace!r} and the token's access to it")
    return PermanentError(f"{what}: the Hub refused the request ({status}: {_message(e)})")


def _message(e: BaseException) -> str:
    """The Hub's own words for a refusal (its error message, else the exception's first line)."""
    response = getattr(e, "response", None)
    said = response.headers.get("X-Error-Message") if response is not None else None
    return said or str(e).splitlines()[0]
