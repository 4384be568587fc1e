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
from pathlib import Path
from typing import Any
from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

INCLUDE = str(Path(__file__).resolve().parents[1] / "include")
if INCLUDE not in sys.path:
    sys.path.insert(0, INCLUDE)

from nemo2sherpa.records import Benchmark, Compatibility, Manifest, Validation  # noqa: E402 (pure Python)

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
STYLE = ("body{font-family:Inter,-apple-system,'Segoe UI',Roboto,sans-serif;margin:1.5em;max-width:72em;color:#1a202c}"
         "h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em} table{border-collapse:collapse;margin:.4em 0} "
         "td,th{border:1px solid #e2e8f0;padding:4px 8px;font-size:90%;text-align:left} th{background:#f7fafc} "
         "code,pre{font-size:85%} pre{background:#f7fafc;padding:.6em;border-radius:6px;overflow-x:auto} "
         ".card{border:1px solid #e2e8f0;border-radius:8px;padding:.8em 1em;margin:1em 0;background:#fff} "
         ".badge{display:inline-block;padding:2px 10px;border-radius:12px;color:#fff;font-weight:600} "
         ".pass{background:#38a169} .fail{background:#e53e3e} .muted{color:#718096}")


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


def _bundle_reader(pub: dict[str, Any]):
    """(get(name) -> bytes | None) for the published bundle at pub['uri'], through its target: S3 over the run's
    connection (publish.S3Target), or the Hub with the token of the Variable hf_token (hubtarget.HubTarget)."""
    if pub["uri"].startswith("hf://"):
        from airflow.models import Variable  # the api-server's own: it reads the metadata database

        from nemo2sherpa.hubtarget import HubTarget, hub_api

        hub = HubTarget(hub_api(Variable.get("hf_token", default_var=None)), pub["uri"][len("hf://"):].split("/", 1)[0])
        return lambda name: hub.read(f"{pub['uri']}{name}")
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from nemo2sherpa.publish import S3Target
    from nemo2sherpa.workspace import split

    bucket, _ = split(pub["uri"])
    target = S3Target(S3Hook(aws_conn_id=pub.get("aws_conn_id") or "aws_default").get_conn(), bucket)
    return lambda name: target.read(f"{pub['uri']}{name}")


def render_report(dag_id: str, run_id: str, pub: dict[str, Any] | None, get) -> str:
    """The report page: files with sizes and sha256s, validation gates, benchmark table and plot."""
    from markdown_it import MarkdownIt

    from nemo2sherpa.benchmark import table

    esc = html.escape
    head = (f"<!doctype html><html><head><meta charset='utf-8'><title>nemo2sherpa bundle report</title><style>"
            f"{STYLE}</style></head><body><h1>nemo2sherpa bundle report</h1><p class='muted'>run "
            f"<code>{esc(run_id)}</code> of <code>{esc(dag_id)}</code></p>")
    if pub is None:
        return head + ("<p><b>No bundle published by this run</b> (its publish task has not succeeded, or this "
                       "is not a conversion run). The task logs say why.</p></body></html>")
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
             headline(m, get, base),
             f"<p>bundle <code>{esc(pub['uri'])}</code> &middot; <a href='{base}manifest.json'>manifest.json</a></p>",
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
            parts.append(f"<img alt='latency vs clip length' src='{base}benchmark.png' style='max-width:100%'>")
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


def headline(m: Manifest, get, base: str) -> str:
    """What a user decides by, first: the verdict, then per variant its size, drift from fp32, sherpa-onnx's p50 on
    a 10 s clip (or the longest timed), the runtimes it is proven on, and its release archive."""
    from nemo2sherpa.archive import archive_name
    from nemo2sherpa.compat import proven as proven_on
    from nemo2sherpa.variants import BASE, VARIANTS

    esc = html.escape
    val, bench, compat = _record(get, Validation), _record(get, Benchmark), _record(get, Compatibility)
    sizes = {f.name: f.size for f in m.files}
    ok = bool(val and val.passed)
    out = [f"<div class='card'><span class='badge {'pass' if ok else 'fail'}'>{'PASSED' if ok else 'FAILED'}</span> "
           f"{len(val.gates or []) if val else 0} validation gates</div>",
           "<table><tr><th>variant</th><th>size</th><th>WER vs fp32 by clip length (gated)</th><th>sherpa-onnx p50</th>"
           "<th>supported sherpa-onnx</th><th>runtimes proven</th><th>download</th></tr>"]
    for v, x in (val.variants if val else {}).items():
        size = sum(sizes.get(n, 0) for n in VARIANTS[v].published)
        drift = "reference" if v == BASE.name else ", ".join(
            f"{k}: {b.wer_gated}" if b.gated_clips else f"{k}: {b.wer} (audio the model does not know)"
            for k, b in ((x.decoding.wer_by_length if x.decoding else None) or {}).items())
        engine = bench.cpu.get(v) if bench else None
        lengths = (engine.by_length if engine else None) or {}
        at = "10" if "10" in lengths else max(lengths, key=float, default=None)
        p50 = f"{lengths[at].p50_s * 1000:.0f} ms at {at} s" if at else "-"
        proven = proven_on(compat, v) if compat else []
        supported = (compat.ranges[v].range if v in compat.ranges else "-") if compat else "not measured"
        arch = next((n for n in sizes if n.startswith(archive_name(m.source["name"], v) + ".tar")), None)
        out.append(f"<tr><td><b>{esc(v)}</b></td><td>{size / 1e6:,.1f} MB</td><td>{esc(drift)}</td><td>{esc(p50)}"
                   f"</td><td>{esc(supported)}</td><td>{len(proven)} + the reference</td><td>{esc(arch or '-')}</td></tr>")
    return "\n".join(out) + "</table>"


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
            return render_report(dag_id, run_id, pub, _bundle_reader(pub) if pub else (lambda name: None))

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
