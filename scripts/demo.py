"""`make demo`: the main job on the embedded default, end to end, on this machine.

Starts a real S3-compatible server on 127.0.0.1 (rclone serve s3, data under .demo/s3), creates
the bucket, runs the DAG once (`airflow dags test`) on the tiny Parakeet-TDT fixture, stops the
server whatever happens, and prints the S3 URIs, the local folder holding the published files,
the validation figures and the benchmark table. `--hub` (`make demo HUB=1`) also publishes to a loopback
Hugging Face Hub (tests/hubserver.py, on 127.0.0.1, stopped with the run): one repo a variant, and prints
their commits and files.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "include"))

from nemo2sherpa.variants import DEFAULT_VARIANTS  # noqa: E402
from s3server import S3Server, airflow_env  # noqa: E402

DAG_ID = "parakeet_tdt_to_sherpa_onnx"
FIXTURE = ROOT / "tests" / "fixtures" / "tiny-tdt.nemo"
BUCKET = "nemo2sherpa"
HUB_NAMESPACE = "nemo2sherpa-demo"
HUB_TOKEN = "hf_demo_write_token"  # a token of the loopback Hub only


def start_hub(stack: contextlib.ExitStack) -> tuple[object, dict[str, str]]:
    """The loopback Hub, with a write token for the demo's organization; the environment that points the run at it."""
    sys.path.insert(0, str(ROOT / "tests"))
    from hubserver import FakeHub

    hub = stack.enter_context(FakeHub())
    hub.add_token(HUB_TOKEN, user="demo", orgs=(HUB_NAMESPACE,), write=True)
    print(f"Hugging Face Hub (loopback): {hub.url}, namespace {HUB_NAMESPACE}")
    # it speaks LFS, not Xet: huggingface_hub uses Xet whenever hf_xet is installed
    return hub, {"HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1", "AIRFLOW_VAR_HF_TOKEN": HUB_TOKEN}


def run_dag(env: dict[str, str], conf: dict, log_path: Path) -> int:
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    with open(log_path, "w") as log:
        proc = subprocess.run([airflow, "dags", "test", DAG_ID, "-c", json.dumps(conf)], env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    return proc.returncode


def main() -> int:
    demo = ROOT / ".demo"
    demo.mkdir(exist_ok=True)
    log_path = demo / "dag-test.log"
    with_hub = "--hub" in sys.argv[1:]
    conf = {"source": str(FIXTURE), "bucket": BUCKET, "prefix": "bundles", "benchmark_lengths": [2, 5],
            "variants": DEFAULT_VARIANTS, "force": True}
    t0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        s3 = stack.enter_context(S3Server(demo / "s3", log=demo / "rclone-s3.log"))
        print(f"S3 server: {s3.endpoint} (rclone serve s3, data in {s3.root})")
        s3.ensure_bucket(BUCKET)
        hub, hub_env = start_hub(stack) if with_hub else (None, {})
        if hub is not None:
            conf.update(targets=["s3", "hub"], hub_namespace=HUB_NAMESPACE)
        env = airflow_env(AIRFLOW_CONN_AWS_DEFAULT=s3.airflow_conn(), **hub_env)
        print(f"running DAG {DAG_ID} on {FIXTURE.name} (log: {log_path}) ...", flush=True)
        rc = run_dag(env, conf, log_path)
        text = log_path.read_text(errors="replace")
        if rc != 0 or "published:" not in text:
            print("\n".join(text.splitlines()[-60:]))
            print(f"DAG run FAILED (exit {rc}); full log: {log_path}", file=sys.stderr)
            return 1
        objs = s3.client().list_objects_v2(Bucket=BUCKET, Prefix="bundles/")["Contents"]
        manifests = sorted((o for o in objs if o["Key"].endswith("/manifest.json")), key=lambda o: o["LastModified"])
        key = manifests[-1]["Key"].rsplit("/", 1)[0]
        manifest = json.loads(s3.client().get_object(Bucket=BUCKET, Key=f"{key}/manifest.json")["Body"].read())
        for c in getattr(hub, "commits", []):
            repo = hub.repos[c["repo"]]
            print(f"\nHub repo {hub.url}/{c['repo']} commit {c['sha']}:")
            print("\n".join(f"  {name:<28} {repo.sha256.get(name, '')[:16]}" for name in sorted(repo.files)))
    # The server is stopped here; its files stay on disk.
    folder = demo / "s3" / BUCKET / key
    print(f"\nDAG run succeeded in {time.monotonic() - t0:.0f} s.\n\nS3 URIs:")
    for f in manifest["files"] + [{"name": "manifest.json", "size": (folder / 'manifest.json').stat().st_size}]:
        print(f"  s3://{BUCKET}/{key}/{f['name']:<38} {f['size']:>12,} bytes")
    latest = demo / "s3" / BUCKET / key.rsplit("/", 1)[0] / "latest.json"
    if latest.exists():
        print(f"  s3://{BUCKET}/{key.rsplit('/', 1)[0]}/latest.json (the model's pointer to this bundle)")
    print(f"\nlocal folder with the published files: {folder}")
    print_figures(folder)
    return 0


def print_figures(folder: Path) -> None:
    """What a published bundle's reports say, in brief: the gates, the per-variant table, the runtimes, the
    benchmark table (the tests run it on the bundle the DAG publishes)."""
    from nemo2sherpa.benchmark import table
    from nemo2sherpa.records import Benchmark

    val = json.loads((folder / "validation.json").read_text())
    print(f"\nvalidation: {len(val['gates'])} gates, {'all passed' if val['passed'] else 'FAILED'} "
          f"(VALIDATION.md in the bundle has every gate and transcript)")
    md = (folder / "VALIDATION.md").read_text().splitlines()
    print("\n".join(md[md.index(next(x for x in md if x.startswith("| variant"))):][:2 + len(val["variants"])]))
    compat = folder / "compatibility.json"
    if compat.exists():
        c = json.loads(compat.read_text())
        print(f"\nruntimes (compared with {c['reference']}):")
        print("\n".join(f"  {v}: {r['layout']}, supported {r['range']}" for v, r in c["ranges"].items()))
        print("\n".join(f"  {r['runtime']:<56} " + "; ".join(
            f"{v} {x['status']} ({'in' if x['in_range'] else 'outside'} range)" for v, x in r["variants"].items())
            for r in c["runtimes"]))
    print("\nbenchmark (sherpa-onnx, CPU, warm-up excluded):")
    print(table(Benchmark.read(folder)))

if __name__ == "__main__":
    sys.exit(main())
