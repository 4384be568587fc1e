"""Publish throughput: nemo2sherpa's publish vs a plain `aws s3 cp`-style boto3 upload, same file, same server.

Run by hand (not in CI):   make bench-publish     (= .venv/bin/python benchmarks/publish_speed.py)

Starts `rclone serve s3` on 127.0.0.1 with its data under --work, writes a --size-gb file of
non-repeating bytes (like model weights, it does not compress), and uploads it, each in its own child
process so wall time and peak RSS are the upload's own: (a) publish_bundle as the pipeline runs it: the
bundle holds validate's validation.json with the file's digest (written before the clock starts, as
validate writes it before publish runs), so the file goes up under that digest, multipart 16 MiB x 8 in
parallel, while a thread re-hashes it to prove it is the validated file; (b) publish_bundle on a bundle
without validation.json, which hashes the file before uploading it; (c) boto3 `upload_file` with its
defaults, what `aws s3 cp` does. --rounds rounds, the order rotated every round.
Writes benchmarks/results/publish-speed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "scripts")]

from nemo2sherpa.child import run_measured  # noqa: E402
from nemo2sherpa.source import sha256_file  # noqa: E402
from s3server import S3Server  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
GOAL = 0.9  # issue 4: publish >= 0.9x plain boto3

UPLOAD = r"""
import json, sys, boto3
sys.path[:0] = [sys.argv[1]]
from pathlib import Path
mode, bundle, endpoint, key, secret, dest = sys.argv[2:8]
c = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret, region_name="us-east-1")
if mode.startswith("publish"):
    from nemo2sherpa.publish import publish_bundle
    from nemo2sherpa.records import Source
    publish_bundle(c, Path(bundle), "bench", dest, Source(kind="local", name="bench", revision="x"))
else:
    c.upload_file(str(Path(bundle) / "encoder.weights"), "bench", f"{dest}/encoder.weights")
print(json.dumps({"ok": True}))
"""


def make_file(path: Path, size: int) -> None:
    chunk = os.urandom(64 << 20)
    with open(path, "wb") as f:
        for i in range(size // len(chunk)):
            f.write(chunk[i % 7 :] + chunk[: i % 7])  # shifted: no two parts are byte-identical


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/nemo2sherpa-publish-bench"))
    ap.add_argument("--size-gb", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    bundle, unvalidated = a.work / "bundle", a.work / "unvalidated"
    bundle.mkdir(parents=True)
    unvalidated.mkdir()
    size = int(a.size_gb * 2**30) // (64 << 20) * (64 << 20)
    make_file(bundle / "encoder.weights", size)
    os.link(bundle / "encoder.weights", unvalidated / "encoder.weights")  # the same bytes, no validation record
    (bundle / "validation.json").write_text(json.dumps({"passed": True, "files": [
        {"name": "encoder.weights", "size": size, "sha256": sha256_file(bundle / "encoder.weights")}]}))
    runs: dict[str, list[dict]] = {"publish": [], "publish-unvalidated": [], "boto3": []}
    folders = {"publish": bundle, "publish-unvalidated": unvalidated, "boto3": bundle}
    with S3Server(a.work / "s3", log=a.work / "rclone.log") as s3:
        s3.ensure_bucket("bench")
        for r in range(a.rounds):
            modes = list(runs)
            for mode in modes[r % 3:] + modes[: r % 3]:
                os.sync()  # the previous upload's dirty pages are written back before, not during, this one
                cmd = [sys.executable, "-c", UPLOAD, str(ROOT / "include"), mode, str(folders[mode]), s3.endpoint, s3.key,
                       s3.secret, f"{mode}-{r}"]
                proc, measured = run_measured(cmd)
                usage = measured.to_json()
                if proc.returncode != 0:
                    print(f"{mode} upload failed (exit {proc.returncode})", file=sys.stderr)
                    return 1
                usage["mb_s"] = round(size / 1e6 / usage["wall_s"], 1)
                runs[mode].append(usage)
                print(f"{mode:<19} round {r}: {usage['wall_s']:.1f} s, {usage['mb_s']} MB/s, peak RSS "
                      f"{usage['peak_rss_bytes'] / 1e6:.0f} MB", flush=True)
    med = {m: statistics.median(u["mb_s"] for u in v) for m, v in runs.items()}
    secs = {m: statistics.median(u["wall_s"] for u in v) for m, v in runs.items()}
    ratio = round(med["publish"] / med["boto3"], 3)
    unvalidated_ratio = round(med["publish-unvalidated"] / med["boto3"], 3)
    rec = {"date": time.strftime("%Y-%m-%d"), "command": "make bench-publish", "file_bytes": size,
           "server": "rclone serve s3 on 127.0.0.1 (files on local disk)", "runs": runs,
           "median_mb_s": med, "median_s": secs, "publish_over_boto3": ratio,
           "unvalidated_publish_over_boto3": unvalidated_ratio, "goal": GOAL, "cpus": os.cpu_count()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "publish-speed.json").write_text(json.dumps(rec, indent=2) + "\n")
    md = [f"# Publish throughput ({rec['date']}, `{rec['command']}`)", "",
          f"One {size / 2**30:.1f} GiB file of non-repeating bytes to {rec['server']}, {os.cpu_count()} cores, "
          f"each upload in its own process after a sync, {a.rounds} rounds, order rotated each round.", "",
          "| upload | median s | median MB/s | peak RSS (MB) |", "|---|---|---|---|"]
    labels = {"publish": "nemo2sherpa publish, as in the pipeline (validated digest; re-hash during the upload)",
              "publish-unvalidated": "nemo2sherpa publish, no validation.json (sha256 pass, then the upload)",
              "boto3": "boto3 upload_file defaults (aws s3 cp style)"}
    for m, v in runs.items():
        md.append(f"| {labels[m]} | {secs[m]} | {med[m]} | {max(u['peak_rss_bytes'] for u in v) / 1e6:.0f} |")
    md += ["", f"publish / boto3 = {ratio} (goal >= {GOAL}). Without validate's digests: {unvalidated_ratio} "
               f"(the sha256 pass before the upload costs {secs['publish-unvalidated'] - secs['publish']:.1f} s).",
           "", "Both publish modes use multipart 16 MiB parts, 8 in parallel, and write validation.json (if any), "
               "manifest.json and latest.json after the file: three small PUTs.", ""]
    (RESULTS / "publish-speed.md").write_text("\n".join(md))
    print("\n".join(md))
    shutil.rmtree(a.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
