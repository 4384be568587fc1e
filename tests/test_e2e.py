"""End to end: dag.test() on the tiny fixture against a real S3 server, then a fresh download."""

from __future__ import annotations

import json

from conftest import FIXTURE, ROOT, last_json, run_cli
from nemo2sherpa.audio import load_clips
from nemo2sherpa.publish import verify_download


def test_dag_converts_validates_benchmarks_and_publishes(airflow_db, s3, tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", s3.airflow_conn())
    dag = DagBag(dag_folder=str(ROOT / "dags")).dags["parakeet_tdt_to_sherpa_onnx"]
    dr = dag.test(run_conf={"source": str(FIXTURE), "bucket": "e2e-bucket", "prefix": "ci", "benchmark_lengths": [1, 2]})
    assert dr.state == "success", [(ti.task_id, ti.state) for ti in dr.get_task_instances()]

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
    assert {"encoder.onnx", "decoder.onnx", "joiner.onnx", "encoder.int8.onnx", "decoder.int8.onnx",
            "joiner.int8.onnx", "tokens.txt", "benchmark.json", "validation.json"} <= set(names)
    val = json.loads((dl / "validation.json").read_text())
    assert val["passed"] and val["variants"]["fp32"]["decoding"]["token_match_rate"] == 1.0
    bench = json.loads((dl / "benchmark.json").read_text())
    assert set(bench["cpu"]) == {"fp32", "int8"} and bench["gpu"]["status"] == "skipped"

    # sherpa-onnx decodes a clip from the downloaded int8 bundle, and agrees with what the DAG saw.
    clip = load_clips()[0]
    out = last_json(run_cli("onnx", "sherpa-decode", "--bundle", str(dl), "--variant", "int8", str(clip.path)))
    assert out["texts"][0] == val["variants"]["int8"]["sherpa"]["texts"][0] and out["texts"][0]
