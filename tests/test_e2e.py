"""End to end: dag.test() on the tiny fixture against a real S3 server, then a fresh download."""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import urllib.request
from pathlib import Path

import pytest

from conftest import BIG_LAYOUT, FIXTURE, ROOT, last_json, run_cli
from s3server import S3Server
from nemo2sherpa import PIPELINE_VERSION
from nemo2sherpa.audio import load_clips
from nemo2sherpa.compat import PROVEN
from nemo2sherpa.publish import verify_download


# A store secret that Airflow's masking of the raw string would miss once JSON-escaped (a quote, a backslash,
# non-ASCII): it must reach no rendered field, XCom value or log line by any route.
NASTY_SECRET = 'p"a\\ss-w\u00f6rd-\u00e9t\u00e9-42'


@pytest.fixture()
def nasty_s3(tmp_path):
    with S3Server(tmp_path / "s3", log=tmp_path / "rclone.log", secret=NASTY_SECRET) as server:
        yield server


def test_dag_converts_validates_benchmarks_and_publishes(airflow_db, nasty_s3, tmp_path, monkeypatch, task_logs,
                                                         capfd):
    """The whole DAG on the trained fixture in the big models' file layout (the test knob: fp32's encoder weights in
    encoder.weights, as every registry model over 2 GB ships): every step, the runtime matrix on both layouts, the
    archives, publish, the report page; then a fresh download, and the cards' snippets run as written. The
    checkpoint and the evaluation set come from the user's bucket through the run's connection, resolved by the
    worker at run time: its secret is in no rendered field, XCom value or log."""
    from airflow.dag_processing.dagbag import DagBag

    s3 = nasty_s3
    monkeypatch.setenv("NEMO2SHERPA_SINGLE_FILE_MAX", BIG_LAYOUT)  # the venv tasks inherit it
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", s3.airflow_conn())
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)  # the source task must get the store from the run's connection
    # The checkpoint and the evaluation set come from the user's bucket, through the run's S3 connection.
    s3.ensure_bucket("e2e-inputs")
    c = s3.client()
    c.upload_file(str(FIXTURE), "e2e-inputs", "models/tiny-tdt.nemo")
    for clip in load_clips():
        c.upload_file(str(clip.path), "e2e-inputs", f"eval/{clip.name}.wav")
    c.put_object(Bucket="e2e-inputs", Key="eval/texts.tsv", Body="".join(f"{x.name}\t{x.text}\n" for x in load_clips()))
    dag = DagBag(dag_folder=str(ROOT / "dags")).dags["parakeet_tdt_to_sherpa_onnx"]
    dr = dag.test(run_conf={"source": "s3://e2e-inputs/models/tiny-tdt.nemo", "eval_set": "s3://e2e-inputs/eval",
                            "bucket": "e2e-bucket", "prefix": "ci", "benchmark_lengths": [1, 2],
                            "int8_recipe": "sherpa-onnx",  # not the default: the param must reach quantize
                            "int8_wer_max": 0.07,  # nor this
                            "long_recording_s": 75})  # nor this (the tests' default: off)
    assert dr.state == "success", [(ti.task_id, ti.state) for ti in dr.get_task_instances()]
    logs = task_logs()  # under dag.test, every task logs in this process
    assert "published:" in logs
    assert_secret_nowhere(s3.secret, dr, logs)
    assert "step export: holds no credential, Airflow connection or variable" in logs  # the checkpoint's step
    assert "== nemo2sherpa: tiny-tdt @ sha256-" in logs and "validation: passed" in logs  # the run's summary table
    assert "sherpa-onnx CPU p50 int8: 1 s clip" in logs and "fp32 max abs diff vs PyTorch: encoder" in logs

    c = s3.client()
    objs = [o["Key"] for o in c.list_objects_v2(Bucket="e2e-bucket", Prefix="ci/")["Contents"]]
    manifest_key = next(k for k in objs if k.endswith("/manifest.json"))
    prefix = manifest_key.rsplit("/", 1)[0]
    assert prefix.startswith("ci/tiny-tdt/sha256-")
    dl = tmp_path / "download"
    dl.mkdir()
    for k in objs:
        c.download_file("e2e-bucket", k, str(dl / k.rsplit("/", 1)[1]))
    names = verify_download(dl)
    assert {"encoder.onnx", "encoder.weights", "decoder.onnx", "joiner.onnx", "encoder.int8.onnx", "decoder.int8.onnx",
            "joiner.int8.onnx", "tokens.txt", "bpe.vocab", "benchmark.json", "benchmark.png", "validation.json",
            "VALIDATION.md"} <= set(names)
    val = json.loads((dl / "validation.json").read_text())
    assert val["passed"] and val["variants"]["fp32"]["decoding"]["token_match_rate"] == 1.0
    assert val["source"]["url"] == "s3://e2e-inputs/models/tiny-tdt.nemo" and val["source"]["kind"] == "s3"
    assert val["eval_set"]["source"] == "s3://e2e-inputs/eval" and len(val["eval_set"]["clips"]) == 4
    published = {f["name"]: f["sha256"] for f in json.loads((dl / "manifest.json").read_text())["files"]}
    assert {f["name"]: f["sha256"] for f in val["files"]}.items() <= published.items()  # what validate passed
    line = next(x for x in logs.splitlines() if "validated bytes: " in x)  # the summary says so (a log record:
    said = line.rsplit(": ", 1)[1].split(" [", 1)[0]  # Airflow's handler may append its logger and place)
    assert {f["name"] for f in val["files"]} == set(said.split(", ")) >= {"encoder.int8.onnx", "encoder.weights"}
    assert val["thresholds"]["int8_wer_vs_fp32"] == 0.07  # the run's param (default 0.05) reached the gate
    assert val["int8"]["recipe"] == "sherpa-onnx" and "int8 recipe sherpa-onnx" in logs  # the form's choice made int8
    assert val["int8"]["integer_ops"]["encoder.int8.onnx"]["ConvInteger"] > 0  # the upstream recipe's graph
    assert (dl / "VALIDATION.md").read_text().startswith("# Validation: PASSED (full)")
    bench = json.loads((dl / "benchmark.json").read_text())
    assert set(bench["cpu"]) == {"fp32", "int8"} and bench["gpu"]["status"] == "skipped"

    # The bundle is an asset event on its S3 URI (through the DAG's alias), for downstream DAGs.
    from sqlalchemy import select

    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        asset = session.scalars(select(AssetModel).where(AssetModel.uri == f"s3://e2e-bucket/{prefix}")).one()
        events = session.scalars(select(AssetEvent).where(AssetEvent.asset_id == asset.id)).all()
        assert events and events[-1].extra["model"] == "tiny-tdt" and events[-1].source_run_id == dr.run_id

    # The UI's bundle report (plugins/nemo2sherpa_plugin.py) reads this run's published bundle back from S3.
    import nemo2sherpa_plugin as plugin

    pub = plugin._publish_result(dag.dag_id, dr.run_id)
    assert pub["uri"] == f"s3://e2e-bucket/{prefix}/" and pub["aws_conn_id"] == "aws_default"
    page = plugin.render_report(dag.dag_id, dr.run_id, pub, plugin._bundle_reader(pub), plugin._downloads(pub))
    manifest = json.loads((dl / "manifest.json").read_text())
    assert all(f["sha256"] in page for f in manifest["files"]) and "<img alt='latency" in page
    assert "Validation: PASSED" in page and "sherpa-cpu" in page  # VALIDATION.md and the benchmark table
    # It leads with the verdict and what a user decides by: per variant size, gated and reported figures apart, p50,
    # runtimes by name and version, download links.
    top = page[:page.index("<h2>Where</h2>")]
    assert "badge pass" in top and "<td>sherpa-onnx &gt;= 1.12.14</td>" in top and "ms at 2 s" in top
    assert "<td>sherpa-onnx &gt;= 1.12.36 (or &gt;= 1.12.21 run from the model&#x27;s folder" in top  # fp32's layout
    assert "<th>gated (limit)</th><th>reported only</th>" in top and "&le; 0.07" in top  # the run's int8 limit
    assert "<b>Long recordings</b>: attention full; length limit none but memory" in top
    assert "Longest recording validated: " in top
    assert "min, the long-recording gate&#x27;s: the evaluation clips in turn with pauses)" in top and \
        "Memory: sherpa-onnx&#x27;s peak memory decoding 1.3 min at once: fp32 " in top  # 75 s and the clip it ends in
    row = top[top.index("<td><b>int8</b></td>"):]
    gated, reported = row.split("</td><td>")[2:4]
    assert "WER vs fp32 (worst length bucket)" in gated and "&le;" not in reported and "WER vs fp32" in reported
    compat = json.loads((dl / "compatibility.json").read_text())
    proven = [r["runtime"] for r in compat["runtimes"] if r["variants"].get("int8", {}).get("in_range")
              and r["variants"]["int8"]["status"] in PROVEN]
    assert proven and all(f"<li>{html.escape(r)}</li>" in row.split("</tr>")[0] for r in proven)
    # The int8 archive's link is presigned through the run's connection: a browser gets the published bytes.
    link = html.unescape(re.search(r"<a href='([^']+)'>sherpa-onnx-nemo-tiny-tdt-int8\.tar\.gz</a>", top)[1])
    assert "X-Amz-Expires=3600" in link and "link valid 60 min" in top
    with urllib.request.urlopen(link, timeout=30) as r:
        got = hashlib.sha256(r.read()).hexdigest()
    assert got == next(f["sha256"] for f in manifest["files"] if f["name"] == "sherpa-onnx-nemo-tiny-tdt-int8.tar.gz")
    assert "No such run" in plugin.render_report(dag.dag_id, "no-such-run", None, lambda name: None)

    # sherpa-onnx decodes a clip from the downloaded int8 bundle, and agrees with what the DAG saw.
    clip = load_clips()[0]
    out = last_json(run_cli("onnx", "sherpa-decode", "--bundle", str(dl), "--variant", "int8", str(clip.path)))
    assert out["texts"][0] == val["variants"]["int8"]["sherpa"]["texts"][0] and out["texts"][0]

    # The release archives went up with the bundle, listed in the manifest; the int8 one's card runs as written.
    manifest = json.loads((dl / "manifest.json").read_text())
    archives = {f["name"] for f in manifest["files"] if ".tar" in f["name"]}
    assert archives == {"sherpa-onnx-nemo-tiny-tdt.tar", "sherpa-onnx-nemo-tiny-tdt-int8.tar.gz"}
    compat = json.loads((dl / "compatibility.json").read_text())
    assert compat["passed"] and "Runtimes (the compat stage)" in (dl / "VALIDATION.md").read_text()
    assert compat["ranges"]["fp32"]["layout"] == "external weights" and compat["ranges"]["int8"]["layout"] == "single file"
    for variant in ("int8", "fp32"):
        run_the_model_card(c, "e2e-bucket", prefix, val, variant, tmp_path / f"card-{variant}")

    # What `make demo` prints of the published bundle reads it as the DAG published it.
    import demo

    demo.print_figures(dl)
    shown = capfd.readouterr().out
    assert f"validation: {len(val['gates'])} gates, all passed" in shown and "sherpa-cpu" in shown
    assert "C API from C" in shown and "| int8 |" in shown


def test_a_failed_gate_fails_the_run_and_publishes_nothing(airflow_db, s3, family_checkpoints, monkeypatch,
                                                           tmp_path):
    """A random-weight checkpoint (the 1.1b family's shape) converts exactly, but its transcripts are noise
    that sherpa-onnx's own front end changes. Given audio without reference texts, nothing tells known audio from
    unknown, so the sherpa-onnx gate holds every clip; with the form's limit at 0 any difference fails: the validate
    task fails at once (no retry for a verdict), and nothing reaches the bucket."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", s3.airflow_conn())
    untexted = tmp_path / "untexted"
    untexted.mkdir()
    for clip in load_clips():
        (untexted / clip.path.name).write_bytes(clip.path.read_bytes())
    dag = DagBag(dag_folder=str(ROOT / "dags")).dags["parakeet_tdt_to_sherpa_onnx"]
    dr = dag.test(run_conf={"source": str(family_checkpoints["tdt-1.1b"]), "bucket": "fail-bucket", "prefix": "ci",
                            "variants": ["fp32"], "benchmark_lengths": [1], "sherpa_wer_max": 0.0,
                            "eval_set": str(untexted)})
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert dr.state == "failed", states
    assert states["validate_export"] == "success" and states["validate"] == "failed", states
    assert states["benchmark"] == "upstream_failed" and states["publish"] == "upstream_failed", states
    assert "fail-bucket" not in [b["Name"] for b in s3.client().list_buckets().get("Buckets", [])]
    plan = next(ti for ti in dr.get_task_instances() if ti.task_id == "plan").xcom_pull(task_ids="plan")
    report = json.loads((Path(plan["bundle"]) / "validation.json").read_text())
    failed = [g["gate"] for g in report["gates"] if not g["passed"]]
    assert failed == ["fp32: sherpa-onnx WER vs NeMo"], failed
    assert report["thresholds"]["sherpa_wer_vs_nemo"] == 0.0  # the run's param reached the gate
    sherpa = report["variants"]["fp32"]["sherpa"]
    assert len(sherpa["gated_clips"]) == 4 and sherpa["wer_vs_nemo_gated"] > 0  # every clip held: no texts
    validate = next(ti for ti in dr.get_task_instances() if ti.task_id == "validate")
    assert validate.try_number == 1  # a verdict: failed at once, never retried
    assert report["variants"]["fp32"]["decoding"]["exact_clips"] == 4  # the conversion itself is exact


def test_dag_converts_a_private_hub_repo_with_the_token_from_a_variable(airflow_db, s3, fake_hub, monkeypatch, task_logs):
    """Source = a Hub repo id (the loopback Hub, serving the trained fixture as a private repo): the token comes
    from the Airflow Variable hf_token, reaches the Hub, and appears in no log; the bundle key is the commit sha.
    Published to both targets: S3, and a private Hub repo under the token's organization, one commit, whose sha the
    publish task's result and the bundle report hold. Triggered again, the run stops after source: published."""
    from airflow.dag_processing.dagbag import DagBag

    token = "hf_" + "s3cr3t" * 6
    commit = "c0ffee" + "0" * 34
    fake_hub.add_repo("acme/private-tdt", {"tiny-tdt.nemo": FIXTURE}, commit, token=token)
    fake_hub.add_token(token, user="alice", orgs=("acme",), write=True)
    monkeypatch.setenv("AIRFLOW_VAR_HF_TOKEN", token)
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", s3.airflow_conn())
    dag = DagBag(dag_folder=str(ROOT / "dags")).dags["parakeet_tdt_to_sherpa_onnx"]
    conf = {"source": "acme/private-tdt", "revision": "main", "bucket": "hub-bucket", "prefix": "ci",
            "variants": ["fp32"], "benchmark_lengths": [1], "targets": ["s3", "hub"], "hub_namespace": "acme",
            "hub_private": True}
    dr = dag.test(run_conf=conf)
    seen = [r["auth"] for r in fake_hub.requests]
    logs = task_logs()
    assert dr.state == "success", [(ti.task_id, ti.state) for ti in dr.get_task_instances()]
    assert f"Bearer {token}" in seen  # the token reached the Hub ...
    assert token not in logs  # ... and no log line
    # The steps' lines carry the task log's prefix only, not a second time and logger of their own.
    import re

    assert "restored " in logs and not re.search(r"\d\d:\d\d:\d\d,\d{3} nemo2sherpa\.", logs)
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket="hub-bucket", Prefix="ci/")["Contents"]]
    assert f"ci/private-tdt/{commit}-{PIPELINE_VERSION}/manifest.json" in keys
    published = next(ti for ti in dr.get_task_instances() if ti.task_id == "publish").xcom_pull(task_ids="publish")
    assert published["uri"] == f"s3://hub-bucket/ci/private-tdt/{commit}-{PIPELINE_VERSION}/"
    made = [c for c in fake_hub.commits if c["repo"] == "acme/sherpa-onnx-nemo-private-tdt"]
    assert len(made) == 1 and fake_hub.repos["acme/sherpa-onnx-nemo-private-tdt"].private
    assert published["targets"]["hub"]["commits"] == {"acme/sherpa-onnx-nemo-private-tdt": made[0]["sha"]}
    assert f"commit {made[0]['sha']}  acme/sherpa-onnx-nemo-private-tdt" in logs
    assert {"encoder.onnx", "tokens.txt", "bpe.vocab", "README.md", "manifest.json"} <= set(
        fake_hub.repos["acme/sherpa-onnx-nemo-private-tdt"].files)
    # The bundle report names the commit; a run that published to the Hub only is read back from the Hub's repo.
    import nemo2sherpa_plugin as plugin

    pub = plugin._publish_result(dag.dag_id, dr.run_id)
    assert f"commit <code>{made[0]['sha']}</code>" in plugin.render_report(dag.dag_id, dr.run_id, pub,
                                                                          plugin._bundle_reader(pub))
    hub_only = {**published["targets"]["hub"], "targets": {"hub": published["targets"]["hub"]}}
    page = plugin.render_report(dag.dag_id, dr.run_id, hub_only, plugin._bundle_reader(hub_only),
                                plugin._downloads(hub_only))
    assert f"<a href='{fake_hub.url}/acme/sherpa-onnx-nemo-private-tdt'>acme/sherpa-onnx-nemo-private-tdt</a>" in page
    assert "badge pass" in page and "sherpa-onnx WER vs NeMo: <b>" in page  # from the repo manifest's summary
    hub_manifest = json.loads(fake_hub.repos["acme/sherpa-onnx-nemo-private-tdt"].files["manifest.json"].read_bytes())
    assert all(f["sha256"] in page for f in hub_manifest["files"]) and "hf://acme/sherpa-onnx-nemo-private-tdt/" in page

    # Triggered again on the same checkpoint: it stops right after source, says where the bundle is, skips the rest.
    import time

    t0 = time.monotonic()
    again = dag.test(run_conf=conf)
    wall = time.monotonic() - t0
    logs = task_logs()
    states = {ti.task_id: ti.state for ti in again.get_task_instances()}
    assert again.state == "success" and states["source"] == states["unpublished"] == "success", states
    assert all(states[t] == "skipped" for t in ("export", "validate", "package", "benchmark", "publish")), states
    assert f"s3: already published at s3://hub-bucket/ci/private-tdt/{commit}-{PIPELINE_VERSION}/" in logs
    assert "hub: already published at hf://acme/sherpa-onnx-nemo-private-tdt/" in logs
    assert "the remaining tasks are skipped" in logs and len(fake_hub.commits) == 1
    print(f"re-trigger of a published checkpoint: {wall:.1f} s")


def test_a_permanent_failure_in_a_venv_step_fails_it_at_once(airflow_db, s3, fake_hub, monkeypatch, task_logs):
    """A repo that does not exist is bad input: the source task (a virtualenv task) fails on its first try with
    the Hub's answer, classified permanent, never retried (a retry would only ask again); nothing after it runs."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", s3.airflow_conn())
    dag = DagBag(dag_folder=str(ROOT / "dags")).dags["parakeet_tdt_to_sherpa_onnx"]
    dr = dag.test(run_conf={"source": "acme/no-such-repo", "bucket": "never-made", "variants": ["fp32"],
                            "benchmark_lengths": [1]})
    logs = task_logs()
    tis = {ti.task_id: ti for ti in dr.get_task_instances()}
    assert dr.state == "failed", {t: ti.state for t, ti in tis.items()}
    assert tis["source"].state == "failed" and tis["source"].try_number == 1
    assert tis["export"].state == "upstream_failed" and tis["publish"].state == "upstream_failed"
    assert "permanent failure, not retried: source: acme/no-such-repo: no such Hugging Face repo" in logs
    assert any("/api/models/acme/no-such-repo/" in r["path"] for r in fake_hub.requests)
    # The bundle report of this run names the failed task and its error (kept by the DAG's on_failure_callback).
    import nemo2sherpa_plugin as plugin

    run = plugin._run_state(dag.dag_id, dr.run_id)
    assert run.state == "failed" and "acme/no-such-repo: no such Hugging Face repo" in run.failures["source"]
    page = plugin.render_report(dag.dag_id, dr.run_id, None, lambda name: None, run=run)
    assert "task <b>source</b> failed: <code>" in page and "<td>publish</td><td>upstream_failed</td>" in page


def assert_secret_nowhere(secret: str, dr, logs: str) -> None:
    """Neither the secret nor its JSON-escaped form in the run's logs, rendered fields or XCom values."""
    from sqlalchemy import select

    from airflow.models.renderedtifields import RenderedTaskInstanceFields as RTIF
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    forms = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    with create_session() as session:
        rendered = [json.dumps(r.rendered_fields) for r in session.scalars(
            select(RTIF).where(RTIF.dag_id == dr.dag_id, RTIF.run_id == dr.run_id))]
        xcoms = [json.dumps(x.value) for x in session.scalars(
            select(XComModel).where(XComModel.dag_id == dr.dag_id, XComModel.run_id == dr.run_id))]
    assert rendered and xcoms  # there is something to look into
    for form in forms:
        assert form not in logs and not any(form in r for r in rendered) and not any(form in x for x in xcoms), form


def run_the_model_card(client, bucket: str, prefix: str, validated: dict, variant: str, tmp_path: Path) -> None:
    """Docs that run: a published release archive, downloaded and unpacked; its model card's Python and CLI
    snippets run as written, from the archive's folder, on its test_wavs/: they print the validated transcripts."""
    import re
    import subprocess
    import tarfile

    from conftest import stage_python
    from nemo2sherpa.archive import archive_file, archive_name
    from nemo2sherpa.runtimes import Runtime, install
    from nemo2sherpa.variants import VARIANTS

    name, file = archive_name("tiny-tdt", variant), archive_file("tiny-tdt", variant)
    tmp_path.mkdir(parents=True, exist_ok=True)
    client.download_file(bucket, f"{prefix}/{file}", str(tmp_path / file))
    with tarfile.open(tmp_path / file) as tar:
        assert all(m.isreg() and m.mode == 0o644 for m in tar.getmembers() if not m.isdir())
        tar.extractall(tmp_path / "unpacked", filter="data")
    d = tmp_path / "unpacked" / name
    assert {*VARIANTS[variant].files, "tokens.txt", "README.md", "test_wavs"} <= {p.name for p in d.iterdir()}
    assert (d / "encoder.weights").exists() == (variant == "fp32")  # the big models' layout travels whole
    card = (d / "README.md").read_text()
    wavs = sorted(d.glob("test_wavs/*.wav"), key=lambda p: int(p.stem))
    want = [re.search(rf"^- `{w.name}`: (.*)$", card, re.M).group(1) for w in wavs]
    assert want and set(want) <= set(validated["variants"][variant]["sherpa"]["texts"])  # what validate saw
    python = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    out = subprocess.run([str(stage_python("onnx")), "-c", python], cwd=d, capture_output=True, text=True)
    assert out.stdout.splitlines() == want, out.stderr[-2000:]
    bash = re.search(r"```bash\n(.*?)```", card, re.S).group(1)
    cli = Path(install(Runtime("cli", "2.0.1"), Path(os.environ["NEMO2SHERPA_VENV_CACHE"])).cmd[0]).parent
    out = subprocess.run(["bash", "-c", bash], cwd=d, capture_output=True, text=True,
                         env={**os.environ, "PATH": f"{cli}:{os.environ['PATH']}"})
    texts = [json.loads(x)["text"].strip() for x in (out.stdout + out.stderr).splitlines() if x.startswith("{")]
    assert texts == want[:1], (out.stdout[-1000:], out.stderr[-1000:])
