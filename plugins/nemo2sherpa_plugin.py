"""nemo2sherpa's Airflow extensions: the bundle report, reachable from the UI two ways.

- A "Bundle report" tab on every run page of the conversion DAG (an external view, destination dag_run),
  and a "Bundle report" extra link on that DAG's `publish` task.
- Both open /nemo2sherpa/runs/<dag_id>/<run_id>, a page served by this plugin's FastAPI app. It reads the
  *published* bundle (manifest.json, VALIDATION.md, benchmark.json, benchmark.png) from S3 through the
  run's own Airflow connection, so it shows what readers of the bucket get, and works when workers
  and the api-server share no disk. Access needs the same rights as reading the DAG's runs (Airflow's
  own auth dependency: the UI's session cookie or an API bearer token).
"""

from __future__ import annotations

import html
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

INCLUDE = str(Path(__file__).resolve().parents[1] / "include")
if INCLUDE not in sys.path:
    sys.path.insert(0, INCLUDE)

from nemo2sherpa.errors import FAILURE_XCOM  # noqa: E402
from nemo2sherpa.targets import Download  # noqa: E402
from nemo2sherpa.records import Benchmark, Compatibility, Manifest, Validation  # noqa: E402 (pure Python)
from nemo2sherpa.variants import ARCHIVE_FORMATS, BASE, VARIANTS  # noqa: E402


DAG_ID = "parakeet_tdt_to_sherpa_onnx"
PREFIX = "/nemo2sherpa"
PUBLISH_TASK = "publish"
# Bundle files the report may show or hand out: small text and the plot, never the models themselves.
SERVED = {Manifest.FILE: "application/json", "VALIDATION.md": "text/markdown; charset=utf-8",
          Validation.FILE: "application/json", Benchmark.FILE: "application/json",
          "benchmark.png": "image/png", "tokens.txt": "text/plain; charset=utf-8",
          "bpe.vocab": "text/plain; charset=utf-8", Compatibility.FILE: "application/json",
          "README.md": "text/markdown; charset=utf-8"}
# Looks at home next to Airflow 3's UI: its system font stack, neutral greys, rounded cards, green/red verdicts.
STYLE = ("body{font-family:Inter,-apple-system,'Segoe UI',Roboto,sans-serif;margin:1em 1.2em;color:#1a202c} "
         "h1{font-size:1.4em;margin:.2em 0} h2{font-size:1.15em;margin-top:1.6em} "
         "table{border-collapse:collapse;margin:.4em 0;display:block;max-width:100%;overflow-x:auto} "
         "td,th{border:1px solid #e2e8f0;padding:4px 8px;font-size:90%;text-align:left;vertical-align:top} "
         "th{background:#f7fafc} code{font-size:85%;overflow-wrap:anywhere} "
         "pre{font-size:85%;background:#f7fafc;padding:.6em;border-radius:6px;overflow-x:auto} "
         ".card{border:1px solid #e2e8f0;border-radius:8px;padding:.8em 1em;margin:.8em 0;background:#fff} "
         ".badge{display:inline-block;padding:2px 10px;border-radius:12px;color:#fff;font-weight:600} "
         ".pass{background:#38a169} .fail{background:#e53e3e} .wait{background:#718096} .muted{color:#718096} "
         "ul{margin:.2em 0;padding-left:1.2em} img{max-width:100%}")
# A download link's lifetime: long enough to read the page and start a download, short enough to leak little.
LINK_S = 3600



def report_path(dag_id: str, run_id: str) -> str:
    """The report page's path for one run."""
    return f"{PREFIX}/runs/{quote(dag_id, safe='')}/{quote(run_id, safe='')}"


class BundleReportLink(BaseOperatorLink):
    """Extra link on the conversion DAG's publish task (hidden elsewhere: an empty link is not shown)."""

    name = "Bundle report"

    def get_link(self, operator, *, ti_key) -> str:
        """The report's URL on the api-server, for the conversion DAG's publish task only."""
        if ti_key.dag_id != DAG_ID or operator.task_id != PUBLISH_TASK:
            return ""
        from airflow.configuration import conf

        return conf.get("api", "base_url", fallback="").rstrip("/") + report_path(ti_key.dag_id, ti_key.run_id)


def _publish_result(dag_id: str, run_id: str) -> dict[str, Any] | None:
    """What the publish task returned (uri, aws_conn_id, skipped), from the metadata database."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(
            XComModel.get_many(run_id=run_id, key="return_value", dag_ids=dag_id, task_ids=PUBLISH_TASK)
            .with_only_columns(XComModel.value)).first()
    if not row:
        return None
    value = XComModel.deserialize_value(row)
    return value if isinstance(value, dict) else None


def _target(uri: str, aws_conn_id: str | None):
    """The target a published URI lives in (targets.KINDS), as the api-server reaches it: the Hub with the token of the
    Variable hf_token, S3 through the run's connection."""
    from airflow.models import Variable  # the api-server's own: it reads the metadata database

    from nemo2sherpa.hubtarget import hub_api
    from nemo2sherpa.targets import open_targets, target_url

    def s3_client():
        from botocore.config import Config

        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        conn = aws_conn_id or "aws_default"
        # the connection's own client settings, its download links signed as S3 takes them (SigV4; botocore may
        # presign with SigV2, which S3 refuses for most buckets)
        sigv4 = S3Hook(aws_conn_id=conn).config.merge(Config(signature_version="s3v4"))
        return S3Hook(aws_conn_id=conn, config=sigv4).get_conn()

    home = target_url(uri)  # the bucket, the Hub namespace
    clients = {"s3": s3_client, "hub": lambda: hub_api(Variable.get("hf_token", default_var=None))}
    return open_targets({home: home}, clients)[home]


def _bundle_reader(pub: dict[str, Any]):
    """(get(name) -> bytes | None) for the published bundle at pub['uri'], through its target (_target)."""
    target = _target(pub["uri"], pub.get("aws_conn_id"))
    return lambda name: target.read(f"{pub['uri']}{name}")


def _downloads(pub: dict[str, Any]):
    """(links(model, variant) -> [(target kind, targets.Download)]): per target the run published to, what a person
    opens to get the variant (S3: the archive, presigned for LINK_S through the run's connection; the Hub: the repo)."""
    def no_link(e: Exception) -> Download:  # one target's credentials or endpoint failing leaves the page standing
        return Download(name=f"no link ({type(e).__name__}: {str(e)[:120]})", url="")

    targets: dict[str, tuple[Any, str]] = {}
    for kind, r in (pub.get("targets") or {"s3": pub}).items():
        try:  # each target once, for every variant's link
            targets[kind] = _target(r["uri"], pub.get("aws_conn_id")), r["uri"]
        except Exception as e:  # noqa: BLE001 - shown as its link's note
            targets[kind] = no_link(e), r["uri"]

    def links(model: str, variant: str) -> list[tuple[str, Download]]:
        found = []
        for kind, (target, uri) in targets.items():
            try:
                found.append((kind, target if isinstance(target, Download) else
                              target.download(uri, model, variant, LINK_S)))
            except Exception as e:  # noqa: BLE001 - shown as its link's note
                found.append((kind, no_link(e)))
        return found

    return links


@dataclass(frozen=True)
class RunState:
    """What the metadata database says of a run: its state, each task's state, and the error each failed task kept
    (XCom `failure`, pushed by the DAG's on_failure_callback)."""

    state: str
    tasks: dict[str, str]
    failures: dict[str, str]


def _run_state(dag_id: str, run_id: str) -> RunState | None:
    """The run's RunState from the metadata database, or None where there is no such run."""
    from sqlalchemy import select

    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        state = session.scalar(select(DagRun.state).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        if state is None:
            return None
        tasks = dict(session.execute(select(TaskInstance.task_id, TaskInstance.state).where(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)).all())
        rows = session.execute(XComModel.get_many(run_id=run_id, key=FAILURE_XCOM, dag_ids=dag_id)
                               .with_only_columns(XComModel.task_id, XComModel.value)).all()
        failures = {row.task_id: str(XComModel.deserialize_value(row)) for row in rows}
    return RunState(str(state), {t: str(x or "none") for t, x in tasks.items()}, failures)


def _run_section(run: RunState | None, order: list[str]) -> str:
    """For a run that published nothing: why. A failed run names its failed tasks with their errors, then every
    task's state; a running one its running tasks; a run that found its bundle published says so."""
    esc = html.escape
    if run is None:
        return "<p><b>No such run</b> of this DAG.</p>"
    failed = [t for t in order if run.tasks.get(t) == "failed"]
    running = [t for t in order if run.tasks.get(t) in ("running", "queued", "scheduled", "up_for_retry")]
    if failed:
        head = "<div class='card'><span class='badge fail'>FAILED</span> " + "".join(
            f"<p>task <b>{esc(t)}</b> failed: <code>{esc(run.failures.get(t) or 'its log says why')}</code></p>"
            for t in failed) + "<p class='muted'>Nothing was published by this run.</p></div>"
    elif running or run.state in ("running", "queued"):
        head = (f"<div class='card'><span class='badge wait'>RUNNING</span> at task "
                f"<b>{esc(', '.join(running) or '-')}</b>: the bundle is published by the last task, "
                f"<code>{PUBLISH_TASK}</code>; reload this page then.</div>")
    elif run.tasks.get(PUBLISH_TASK) == "skipped":
        head = ("<div class='card'><span class='badge pass'>UP TO DATE</span> this run published nothing: the exact "
                "bundle was already published (the <code>unpublished</code> task's log says where); the report of "
                "the run that published it shows it.</div>")
    else:
        head = "<p><b>No bundle published by this run</b>: its publish task has not succeeded.</p>"
    rows = "".join(f"<tr><td>{esc(t)}</td><td>{esc(run.tasks[t])}</td></tr>" for t in order if t in run.tasks)
    return head + f"<h2>Tasks</h2><table><tr><th>task</th><th>state</th></tr>{rows}</table>"


def render_report(dag_id: str, run_id: str, pub: dict[str, Any] | None, get, links=None,
                  run: RunState | None = None) -> str:
    """The report page: at the top what a person came for (verdict, each variant's gated and reported figures,
    proven runtimes, download links from `links`: _downloads), then where the bundle is, its files, the benchmark
    and the validation report; for a run that published nothing, why (`run`: _run_state)."""
    from markdown_it import MarkdownIt

    from nemo2sherpa.benchmark import table

    esc = html.escape
    head = (f"<!doctype html><html><head><meta charset='utf-8'><title>nemo2sherpa bundle report</title><style>"
            f"{STYLE}</style></head><body><h1>nemo2sherpa bundle report</h1><p class='muted'>run "
            f"<code>{esc(run_id)}</code> of <code>{esc(dag_id)}</code> &middot; <a href='{quote(run_id, safe='')}' "
            f"target='_blank' rel='noopener'>open in its own tab</a></p>")
    if pub is None:
        from nemo2sherpa.pipeline import STEPS

        return head + _run_section(run, ["plan", *(s.name for s in STEPS[:1]), "unpublished",
                                         *(s.name for s in STEPS[1:]), PUBLISH_TASK]) + "</body></html>"
    manifest_raw = get(Manifest.FILE)
    if manifest_raw is None:
        return head + (f"<p><b>{esc(pub['uri'])} has no manifest.json</b>: the bundle is not (or no longer) "
                       "published there. Readers trust a bundle only through its manifest.</p></body></html>")
    m = Manifest.from_json(json.loads(manifest_raw), Manifest.FILE)
    src = m.source
    base = f"{quote(run_id, safe='')}/files/"  # relative to the page: works behind a proxy prefix
    parts = [head, f"<p>model <b>{esc(src['name'])}</b>, revision <code>{esc(src['revision'])}</code>, pipeline "
                   f"{esc(str(m.pipeline_version))}, published {esc(str(m.published_at))}"
                   f"{' (already published: this run skipped the upload)' if pub.get('skipped') else ''}</p>",
             headline(m, get, links),
             f"<h2>Where</h2><p>bundle <code>{esc(pub['uri'])}</code> &middot; "
             f"<a href='{base}manifest.json'>manifest.json</a></p>",
             *(f"<p>{esc(name)}: <code>{esc(r['uri'])}</code>" + "".join(
                 f" &middot; commit <code>{esc(sha)}</code> in <code>{esc(repo)}</code>"
                 for repo, sha in (r.get("commits") or {}).items())
               + (" (up to date: nothing to commit)" if r.get("skipped") else "") + "</p>"
               for name, r in (pub.get("targets") or {}).items()),
             "<h2>Files</h2><table><tr><th>file</th><th>bytes</th><th>sha256</th></tr>"]
    for f in m.files:
        name = esc(f.name)
        cell = f"<a href='{base}{name}'>{name}</a>" if f.name in SERVED else name
        parts.append(f"<tr><td>{cell}</td><td>{f.size:,}</td><td><code>{esc(f.sha256)}</code></td></tr>")
    parts.append("</table>")
    names = {f.name for f in m.files}
    if Benchmark.FILE in names:
        parts.append("<h2>Benchmark</h2>")
        if "benchmark.png" in names:
            parts.append(f"<img alt='latency and speed-up vs clip length' src='{base}benchmark.png'>")
        bench = _record(get, Benchmark)
        parts.append(f"<pre>{esc(table(bench))}</pre>" if bench else "<p>benchmark.json is not readable</p>")
    if "VALIDATION.md" in names:
        md = MarkdownIt("commonmark", {"html": False}).enable("table")
        parts.append("<h2>Validation</h2>" + md.render((get("VALIDATION.md") or b"").decode()))
    return "\n".join(parts) + "</body></html>"


def _record(get, cls):
    """A bundle's report file (records.Validation, Benchmark, Compatibility) read through `get`, or None."""
    raw = get(cls.FILE)
    return cls.from_json(json.loads(raw), cls.FILE) if raw else None


def _figures_cell(figures) -> str:
    """Figures (report.Figure) as a list: each value, its clips, and the limit of a gated one."""
    esc = html.escape
    items = [f"{esc(f.label)}: <b>{esc('-' if f.value is None else str(f.value))}</b>"
             + (f" &le; {esc(str(f.limit))}" if f.gated else "") + f" <span class='muted'>({esc(str(f.clips))} clips)"
             "</span>" for f in figures]
    return f"<ul>{''.join(f'<li>{i}</li>' for i in items)}</ul>" if items else "-"


def _download_cell(found: list, sizes: dict[str, int]) -> str:
    """A variant's download links (targets.Download by target kind): the S3 archive when the bundle lists it."""
    esc = html.escape
    out = []
    for kind, d in found:
        if d.name.endswith(tuple(f".{x}" for x in ARCHIVE_FORMATS)) and d.name not in sizes:
            continue  # this bundle was published without its archives
        life = f", link valid {d.expires_s // 60} min" if d.expires_s else ""
        needs = f"; needs {esc(d.needs)}" if d.needs else ""
        name = f"<a href='{esc(d.url)}'>{esc(d.name)}</a>" if d.url else esc(d.name)
        out.append(f"<li>{name} <span class='muted'>({esc(kind)}{life}{needs})</span></li>")
    return f"<ul>{''.join(out)}</ul>" if out else "-"


def headline(m: Manifest, get, links=None) -> str:
    """What a user decides by, first: the verdict, then per variant its size, the figures its gates hold (with their
    limits) apart from those only reported, sherpa-onnx's p50 on a 10 s clip (or the longest timed), the runtimes it
    is proven on by name and version, and its download links (`links`: _downloads)."""
    from nemo2sherpa.compat import proven as proven_on
    from nemo2sherpa.report import Figure, figures

    esc = html.escape
    val, bench, compat = _record(get, Validation), _record(get, Benchmark), _record(get, Compatibility)
    sizes = {f.name: f.size for f in m.files}
    said = m.summary.get("validation") or {}  # what validate's summary put in the manifest (a Hub repo has no more)
    ok = bool(val.passed if val else said.get("passed"))
    figs = figures(val) if val else [f for f in map(Figure.from_json, said.get("figures") or []) if f]
    life = f"; download links are valid {LINK_S // 60} min: reload the page for new ones" if links else ""
    out = [f"<div class='card'><span class='badge {'pass' if ok else 'fail'}'>{'PASSED' if ok else 'FAILED'}</span> "
           f"{len(val.gates or []) if val else said.get('gates', 0)} validation gates"
           + (f", {sum(not g.passed for g in (val.gates or []))} failed" if val else "")
           + ". <span class='muted'>Gated figures "
           f"are measured on the clips the model knows and fail the run over their limit; reported figures never "
           f"fail it (every clip, audio the model does not know included){life}.</span></div>",
           "<table><tr><th>variant</th><th>size</th><th>gated (limit)</th><th>reported only</th>"
           "<th>sherpa-onnx p50</th><th>supported sherpa-onnx</th><th>runtimes proven</th><th>download</th></tr>"]
    for v in (val.variants if val else m.variants or {}):  # a Hub repo holds no validation.json: its variants
        size = sum(sizes.get(n, 0) for n in VARIANTS[v].published)
        mine = [f for f in figs if f.variant == v]
        engine = bench.cpu.get(v) if bench else None
        lengths = (engine.by_length if engine else None) or {}
        at = "10" if "10" in lengths else max(lengths, key=float, default=None)
        p50 = f"{lengths[at].p50_s * 1000:.0f} ms at {at} s" if at else "-"
        proven = proven_on(compat, v) if compat else []
        supported = (compat.ranges[v].range if v in compat.ranges else "-") if compat else "not measured"
        runtimes = ("<ul>" + "".join(f"<li>{esc(r)}</li>" for r in proven) + "</ul>" if proven else
                    "none" if compat else "not measured")
        gated = "reference (fp32 is what the others are held to)" if v == BASE.name and not any(
            f.gated for f in mine) else _figures_cell([f for f in mine if f.gated])
        found = links(m.source["name"], v) if links else []
        out.append(f"<tr><td><b>{esc(v)}</b></td><td>{size / 1e6:,.1f} MB</td><td>{gated}</td>"
                   f"<td>{_figures_cell([f for f in mine if not f.gated])}</td><td>{esc(p50)}</td>"
                   f"<td>{esc(supported)}</td><td>{runtimes}</td><td>{_download_cell(found, sizes)}</td></tr>")
    a = val.long_audio if val else None
    memory = a.memory() if a else None
    long = (f"<p class='long'><b>Long recordings</b>: " + (f"attention {esc(a.attention)}; " if a.attention else "")
            + f"length limit {esc(a.limit)}. Longest recording validated: "
            f"{esc(a.proven())}." + (f" Memory: {esc(memory)}." if memory else "") + "</p>") if a else ""
    return "\n".join(out) + "</table>" + long


def _make_app():
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import HTMLResponse, Response
    from fastapi.concurrency import run_in_threadpool

    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    app = FastAPI(title="nemo2sherpa bundle report")
    can_read = [Depends(requires_access_dag("GET", DagAccessEntity.RUN))]

    @app.get("/runs/{dag_id}/{run_id}", response_class=HTMLResponse, dependencies=can_read)
    async def report(dag_id: str, run_id: str) -> str:
        def build() -> str:
            pub = _publish_result(dag_id, run_id)
            if pub is None:
                return render_report(dag_id, run_id, None, lambda name: None, run=_run_state(dag_id, run_id))
            return render_report(dag_id, run_id, pub, _bundle_reader(pub), _downloads(pub))

        return await run_in_threadpool(build)

    @app.get("/runs/{dag_id}/{run_id}/files/{name}", dependencies=can_read)
    async def bundle_file(dag_id: str, run_id: str, name: str) -> Response:
        if name not in SERVED:
            raise HTTPException(404, f"{name} is not served here; the model files are in the bucket")

        def read() -> bytes | None:
            pub = _publish_result(dag_id, run_id)
            return _bundle_reader(pub)(name) if pub else None

        body = await run_in_threadpool(read)
        if body is None:
            raise HTTPException(404, f"{name} is not in this run's published bundle")
        return Response(body, media_type=SERVED[name])

    return app


class Nemo2SherpaPlugin(AirflowPlugin):
    """The bundle report: a FastAPI app, a run-page tab and the publish task's extra link."""

    name = "nemo2sherpa"
    global_operator_extra_links = [BundleReportLink()]
    fastapi_apps = [{"app": _make_app(), "url_prefix": PREFIX, "name": "nemo2sherpa bundle report"}]
    external_views = [{"name": "Bundle report", "href": "nemo2sherpa/runs/{DAG_ID}/{RUN_ID}",
                       "destination": "dag_run", "url_route": "nemo2sherpa-report"}]
