"""Publish targets: where validated bundles go, behind one small interface (S3 is publish.S3Target).

A `Target` answers what publishing and its readers need, whatever the store: where a model's bundle is (`where`),
the manifest published there (`manifest`: the refresh DAG decides by it), a published file's bytes (`read`: the
report plugin), and publishing a bundle (`publish`, converging whichever write failed on an earlier try, its
errors classified as nemo2sherpa.errors says). `publish_all` is the publish step, whatever the targets (the DAG's
publish task and `convert --publish-to`): each bundle published, then the run's summary logged for the task's log;
`download` gives a person a link to one variant (the report plugin).

Target kinds are declared once (`KINDS`): a kind's name (the DAGs' `targets` param), its URL scheme, and the module
whose `open_target(url, client, options)` makes one from a URL and a client. Whoever opens targets hands over the
clients (`open_targets`): the DAGs and the report plugin from Airflow's connection and Variable, `convert` from the
environment. A new target is one module implementing `Target` and `open_target`, one entry in `KINDS`, its tests.
"""

from __future__ import annotations

import importlib
import logging
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

from . import PIPELINE_VERSION
from .errors import InputError
from .records import FileDigest, Manifest, P50s, Plan, RunFigures, Source, ValidationSummary
from .variants import VARIANT_FILES, VARIANTS

MANIFEST = Manifest.FILE
log = logging.getLogger("nemo2sherpa.targets")

DEFAULT_TARGETS = ["s3"]
HUB_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,94}"  # a Hub user or organization name
HUB_NAMESPACE_PATTERN = rf"^({HUB_NAME})?$"  # the DAGs' param (empty: no Hub target)


@dataclass(frozen=True)
class PublishResult:
    """What a publish did. `skipped`: the bundle was already published with every variant asked for (nothing
    uploaded); `announce`: this run published it, so its asset event is due (a fresh publish, or a retry after a
    later write failed); `added_to`: why an existing bundle was added to (a variant it lacked), else None. `files`
    are the manifest's entries of what this run published (name, size, sha256), `validated` the names published
    under the digests validate recorded; both empty when skipped."""

    uri: str
    manifest_uri: str
    objects: list[str]
    skipped: bool
    announce: bool
    files: list[FileDigest] = field(default_factory=list)
    validated: list[str] = field(default_factory=list)
    added_to: str | None = None
    commits: dict[str, str] = field(default_factory=dict)  # a target that commits (the Hub): repo -> commit sha
    wall_s: float | None = None  # how long publishing took (publish_all), for convert's result

    def to_json(self) -> dict[str, Any]:
        """What the run keeps of it (the publish task's XCom, which the report plugin reads): where the bundle is,
        the objects written, whether it was already up to date, and the commits a committing target made."""
        out = {"uri": self.uri, "objects": self.objects, "skipped": self.skipped}
        return {**out, "commits": self.commits} if self.commits else out

    def asset_event(self, source: Source) -> tuple[str, dict[str, str]]:
        """The bundle's asset event: its URI (without the trailing '/') and what it carries (model, revision,
        pipeline version, the manifest's URI)."""
        return self.uri.rstrip("/"), {"model": source.name, "revision": source.revision,
                                      "pipeline_version": PIPELINE_VERSION, "manifest": self.manifest_uri}


@dataclass(frozen=True)
class Download:
    """What a person opens to get one variant: its name, a URL a browser opens, how long that URL works (None: as
    long as the object is published) and what it needs (a sign-in, say)."""

    name: str
    url: str
    expires_s: int | None = None
    needs: str = ""


@runtime_checkable
class Target(Protocol):
    """A place bundles are published to: what the publish task, the refresh DAG and the report plugin ask of it."""

    def where(self, model: str, revision: str) -> str:
        """The URI of the model's bundle at this revision (and this pipeline version), ending in '/'."""

    def manifest(self, model: str, revision: str) -> Manifest | None:
        """The manifest published for the model at this revision, or None where there is none."""

    def read(self, uri: str) -> bytes | None:
        """A published object's bytes (a bundle's URI, from `where`, and a file name), or None where there is none."""

    def download(self, uri: str, model: str, variant: str, expires_s: int) -> Download:
        """What a person opens to get `variant` of the model's bundle published at `uri` (from `where`): a URL that
        works in a browser for at most `expires_s` seconds where the store signs URLs."""

    def publish(self, bundle: Path, source: Source, variants: list[str], run_id: str,
                summary: RunFigures | None = None, force: bool = False) -> PublishResult:
        """Publish the bundle of `source` (its name and revision say where), its manifest written last: up to date
        when already published with every variant (unless `force`), a variant added to one that lacks it, else the
        whole bundle. `run_id` is recorded in the manifest, `summary` (the gates' figures) too. Raises errors
        classified as nemo2sherpa.errors says (transient: retried)."""


@dataclass(frozen=True)
class TargetOptions:
    """What a run sets on its targets besides their URLs: S3 creates a missing bucket (`create_bucket`, else publish
    fails naming it); the Hub creates new repos private (`private`) and reads the run's reference folder for the model
    card's figures (`reference`)."""

    create_bucket: bool = True
    private: bool = False
    reference: Path | None = None


@dataclass(frozen=True)
class TargetKind:
    """A kind of publish target: its name (the DAGs' `targets` param, the key of its client), its URLs' scheme, form
    and pattern, what it is (the trigger form), the module whose `open_target(url, client, options)` makes one, and
    its URL from a run's params (the DAGs' form)."""

    name: str
    scheme: str
    form: str
    pattern: str
    what: str
    module: str
    url_from: Callable[[Mapping[str, Any]], str]

    def open(self, url: str, client: Any, options: TargetOptions) -> Target:
        """The target at `url` (its form checked by kind_of) through `client`."""
        return importlib.import_module(f"{__package__}.{self.module}").open_target(url, client, options)


# Where a run may publish, declared once (the DAG's param, convert's --publish-to, the refresh DAG, the report plugin):
# each kind, what it is; a run chooses one or both.
KINDS: dict[str, TargetKind] = {k.name: k for k in (
    TargetKind("s3", "s3://", "s3://<bucket>[/<prefix>]", r"^s3://[^/\s]+(/\S*)?$",
               "the S3 bucket and prefix below, through the S3 connection: the bundle's files, manifest.json last, "
               "latest.json", "publish",
               lambda p: f"s3://{p['bucket']}/{p['prefix']}"),
    TargetKind("hub", "hf://", "hf://<user or organization>", rf"^hf://{HUB_NAME}/?$",
               "Hugging Face Hub model repos under the Hub namespace below, one a variant "
               "(<namespace>/sherpa-onnx-nemo-<model>[-<variant>]), laid out as sherpa-onnx's own, one commit each; "
               "the token is the Airflow Variable hf_token (write access)", "hubtarget",
               lambda p: f"hf://{p['hub_namespace']}"),
)}
TARGET_KINDS: dict[str, str] = {k.name: k.what for k in KINDS.values()}


def publish_to(target: Target, bundle: Path, source: Source, variants: list[str], run_id: str,
               validated: ValidationSummary, bench: P50s, force: bool = False) -> PublishResult:
    """The publish task, whatever the target: the bundle published with validate's and the benchmark's figures in
    its manifest, then the run's summary logged, a line a record (the task's log shows what was published where)."""
    result = target.publish(Path(bundle), source, variants, run_id, RunFigures(validation=validated,
                                                                               benchmark_p50_s=bench), force)
    # Logged, not printed: a task's log records and its stdout reach Airflow on two channels, so a print could land
    # after the task's own "Post Execute" marker; a record keeps its place in the task's section.
    for line in summary_lines(result, bundle, variants, source, validated, bench):
        log.info("%s", line)
    return result


def kind_of(url: str) -> TargetKind:
    """The kind of target a URL names; InputError naming the URL and the form it should have."""
    for kind in KINDS.values():
        if url.startswith(kind.scheme):
            if not re.match(kind.pattern, url):
                raise InputError(f"publish target {url!r}: give {kind.form} (nothing was done)")
            return kind
    raise InputError(f"publish target {url!r}: give " + " or ".join(k.form for k in KINDS.values())
                     + " (nothing was done)")


def target_url(published: str) -> str:
    """The URL of the target a published URI lives in (a bundle's or a file's): its scheme and first segment, the
    bucket or the Hub namespace."""
    scheme, sep, rest = published.partition("://")
    return f"{scheme}{sep}{rest.split('/', 1)[0]}"


def open_targets(urls: Mapping[str, str], clients: Mapping[str, Callable[[], Any]],
                 options: TargetOptions = TargetOptions()) -> dict[str, Target]:
    """The targets of a run, by the names it gives them (the DAG: its kinds; convert: the URLs), each opened from its
    URL through the client its kind's factory in `clients` makes (the caller decides where credentials come from).
    Every URL is checked before any client is made."""
    kinds = {name: kind_of(url) for name, url in urls.items()}
    return {name: kinds[name].open(url, clients[kinds[name].name](), options) for name, url in urls.items()}


def publish_all(targets: Mapping[str, Target], bundle: Path, source: Source, variants: list[str], run_id: str,
                validated: ValidationSummary, bench: P50s, force: bool = False) -> dict[str, PublishResult]:
    """The publish step: the bundle published to each target in turn (publish_to), how long each took logged and
    kept (`wall_s`)."""
    out: dict[str, PublishResult] = {}
    for name, target in targets.items():
        t0 = time.monotonic()
        result = publish_to(target, bundle, source, variants, run_id, validated, bench, force)
        out[name] = replace(result, wall_s=round(time.monotonic() - t0, 1))
        log.info("published to %s in %.1f s", name, out[name].wall_s)
    return out


def published_xcom(results: Mapping[str, PublishResult], bundle: Path) -> dict[str, Any]:
    """What the publish task hands the report plugin (its XCom): the first target's result, the local bundle folder,
    and every target's result by name."""
    first = next(iter(results.values()))
    return {**first.to_json(), "bundle": str(bundle), "targets": {name: r.to_json() for name, r in results.items()}}


def summary_lines(result: PublishResult, bundle: Path, variants: list[str], source: Source,
                  validated: ValidationSummary, bench: P50s) -> list[str]:
    """What the publish task's log ends with: up to date; or what was added to, the objects published, the local
    bundle folder and the run's summary (run_summary)."""
    if result.skipped:
        return [f"{result.uri} already published with {', '.join(variants)}: up to date; set force to redo"]
    added = [f"{result.uri} is {result.added_to}: adding to it (its other files stay as they are)"]
    return [*(added if result.added_to else []), "published:", *(f"  {u}" for u in result.objects),
            f"local bundle folder: {bundle}", *run_summary(result, source, validated, bench)]


def run_summary(result: PublishResult, source: Source, validated: ValidationSummary, bench: P50s) -> list[str]:
    """The last thing a run's log shows, a line each: what was published where, with the figures that vouch for
    it."""
    lines = [f"== nemo2sherpa: {source.name} @ {source.revision} (pipeline {PIPELINE_VERSION}) ==",
             "files:"]
    for f in result.files:
        lines.append(f"  {f.name:<20} {f.size:>15,} bytes  sha256 {f.sha256[:16]}"
                     + ("" if result.commits else f"  {result.uri}{f.name}"))
    if result.commits:  # one commit a repo: the commit is the manifest
        lines += [f"  commit {sha}  {repo}" for repo, sha in result.commits.items()]
    else:
        lines.append(f"  {MANIFEST:<20} (written last)  {result.manifest_uri}")
    if result.validated:
        lines.append(f"validated bytes: {len(result.validated)} files carry the sha256s validate recorded (every "
                     f"upload re-hashed and matched): {', '.join(result.validated)}")
    v = validated
    lines.append(f"validation: {'passed' if v.passed else 'FAILED'}, {v.gates} gates; token match "
                 "vs NeMo " + ", ".join(f"{k} {x}" for k, x in v.token_match.items()))
    lines += _figure_lines(v.figures)
    for variant, diffs in v.max_abs_diff.items():
        lines.append(f"  {variant} max abs diff vs PyTorch: " + ", ".join(f"{k} {x:.2e}" for k, x in (diffs or {}).items()))
    if v.encoder_rel_err:
        lines.append("  encoder relative error vs PyTorch (evaluation clips): " + ", ".join(
            f"{variant} {x:.2e}" for variant, x in v.encoder_rel_err.items() if x is not None))
    lines += [f"  {option.replace('_', ' ')}: {x}" for option, x in v.made.items() if x]
    for variant, by_len in (bench or {}).items():
        lines.append(f"sherpa-onnx CPU p50 {variant}: " + ", ".join(f"{L} s clip {x * 1000:.1f} ms" for L, x in by_len.items()))
    lines.append("report: VALIDATION.md, validation.json, benchmark.json, benchmark.png in the bundle")
    return lines


def _figure_lines(summary: list[dict[str, Any]]) -> list[str]:
    """validate's figures (report.Figure, as its summary carries them): the gated ones, each with its limit, apart
    from those only reported, so a reported figure never reads as a failed gate."""
    from .report import Figure

    figures = [f for f in map(Figure.from_json, summary) if f is not None]
    gated = [f"    {f}" for f in figures if f.gated]
    reported = [f"    {f}" for f in figures if not f.gated]
    return (["  gated (on the clips the model knows; a figure over its limit fails the run):", *gated] if gated
            else []) + (["  reported only (on every clip, audio the model does not know included; no limit):",
                         *reported] if reported else [])


def published_state(manifest: Manifest | None, variants: list[str]) -> str | None:
    """None if a published manifest already holds every requested variant, else why a conversion is due."""
    if manifest is None:
        return "not published yet"
    have = {f.name for f in manifest.files}
    missing = [v for v in variants if not set(VARIANT_FILES[v]) <= have]
    return f"published without {', '.join(missing)}" if missing else None


def published_as(target: Target, source: Source, plan: Plan) -> str:
    """Whether `target` holds this exact bundle: "already published at <uri>" when its manifest for the source's
    revision (the checkpoint's commit or sha256) and this pipeline version holds every variant the plan asks for,
    each made with the plan's options (int8: the recipe, as validate's summary recorded it); else why not."""
    uri = target.where(source.name, source.revision)
    manifest = target.manifest(source.name, source.revision)
    missing = published_state(manifest, plan.variants)
    if manifest is None or missing:
        return f"{missing} at {uri}"
    made = manifest.summary.get("validation") or {}  # as the version that published it wrote it: read tolerantly
    differ = [f"{o} {made.get(o)} (this run: {plan.option(o)})" for v in plan.variants for o in VARIANTS[v].options
              if made.get(o) != plan.option(o)]
    if differ:
        return f"published at {uri} with another {', '.join(differ)}"
    return f"already published at {uri} (run {manifest.run_id})"
