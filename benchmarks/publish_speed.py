"""Publish throughput: nemo2sherpa's publish vs a plain `aws s3 cp`-style boto3 upload, same file, same server.

Run by hand (not in CI):   make bench-publish     (= .venv/bin/python benchmarks/publish_speed.py)

Starts `rclone serve s3` on 127.0.0.1 with its data under --work, writes a --size-gb file of
non-repeating bytes (like model weights, it does not compress), and uploads it, each in its own child
process so wall time and peak RSS are the upload's own: (a) publish_bundle (sha256, multipart with
64 MiB parts, 4 in parallel, head check), (b) boto3 `upload_file` with its defaults, what `aws s3 cp`
does. --rounds rounds, the order swapped every round. Writes benchmarks/results/publish-speed.{json,md}.
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
from s3server import S3Server  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
GOAL = 0.9  # issue 4: publish >= 0.9x plain boto3

UPLOAD = r"""
import json, sys, boto3
sys.path[:0] = [sys.argv[1]]
from pathlib import Path
mode, bundle, endpoint, key, secret, dest = sys.argv[2:8]
c = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret, region_name="us-east-1")
if mode == "publish":
    from nemo2sherpa.publish import publish_bundle
    publish_bundle(c, Path(bundle), "bench", dest, {"name": "bench", "revision": "x"})
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
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    bundle = a.work / "bundle"
    bundle.mkdir(parents=True)
    size = int(a.size_gb * 2**30) // (64 << 20) * (64 << 20)
    make_file(bundle / "encoder.weights", size)
    runs: dict[str, list[dict]] = {"publish": [], "boto3": []}
    with S3Server(a.work / "s3", log=a.work / "rclone.log") as s3:
        s3.ensure_bucket("bench")
        for r in range(a.rounds):
            for mode in (("publish", "boto3") if r % 2 == 0 else ("boto3", "publish")):
                os.sync()  # the previous upload's dirty pages are written back before, not during, this one
                cmd = [sys.executable, "-c", UPLOAD, str(ROOT / "include"), mode, str(bundle), s3.endpoint, s3.key,
                       s3.secret, f"{mode}-{r}"]
                proc, usage = run_measured(cmd)
                if proc.returncode != 0:
                    print(f"{mode} upload failed (exit {proc.returncode})", file=sys.stderr)
                    return 1
                usage["mb_s"] = round(size / 1e6 / usage["wall_s"], 1)
                runs[mode].append(usage)
                print(f"{mode:<8} round {r}: {usage['wall_s']:.1f} s, {usage['mb_s']} MB/s, peak RSS "
                      f"{usage['peak_rss_bytes'] / 1e6:.0f} MB", flush=True)
    med = {m: statistics.median(u["mb_s"] for u in v) for m, v in runs.items()}
    ratio = round(med["publish"] / med["boto3"], 3)
    rec = {"date": time.strftime("%Y-%m-%d"), "command": "make bench-publish", "file_bytes": size,
           "server": "rclone serve s3 on 127.0.0.1 (files on local disk)", "runs": runs,
           "median_mb_s": med, "publish_over_boto3": ratio, "goal": GOAL, "cpus": os.cpu_count()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "publish-speed.json").write_text(json.dumps(rec, indent=2) + "\n")
    md = [f"# Publish throughput ({rec['date']}, `{rec['command']}`)", "",
          f"One {size / 2**30:.1f} GiB file of non-repeating bytes to {rec['server']}, {os.cpu_count()} cores, "
          f"each upload in its own process after a sync, {a.rounds} rounds, order swapped each round.", "",
          "| upload | median MB/s | peak RSS (MB) |", "|---|---|---|"]
    for m, v in runs.items():
        label = ("nemo2sherpa publish (sha256 + multipart 64 MiB x 4 + head check)" if m == "publish"
                 else "boto3 upload_file defaults (aws s3 cp style)")
        md.append(f"| {label} | {med[m]} | {max(u['peak_rss_bytes'] for u in v) / 1e6:.0f} |")
    md += ["", f"publish / boto3 = {ratio} (goal >= {GOAL}); publish's time includes its sha256 pass over the file "
               f"and the head check after the upload.", ""]
    (RESULTS / "publish-speed.md").write_text("\n".join(md))
    print("\n".join(md))
    shutil.rmtree(a.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
