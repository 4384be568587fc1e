"""Long recordings at full size: what sherpa-onnx needs, in memory and time, to decode 1, 5 and 10 minutes at once
with parakeet-tdt-1.1b's architecture, fp32 and int8; with local attention, 1, 10 and 30 minutes.

    make bench-long-audio                  # = .venv/bin/python benchmarks/long_audio.py (~25 min, ~20 GB RAM)
    make bench-long-audio ARGS='--minutes 1,5'
    make bench-long-audio ARGS='--local-attention on'   # NeMo's local attention (nemo2sherpa.localattn), ~40 min

The exported encoder computes its positions from the input's length (nemo2sherpa.positions), so no table bounds the
length a bundle decodes; memory does. FastConformer's attention is full: each of its 42 layers holds score matrices
of heads x T x T (and the relative positions' heads x T x 2T) for T encoder frames (12.5 a second), so the memory a
recording needs grows with the square of its length. This measures it where it matters, at 1.1B. With
`--local-attention` the encoder is exported with NeMo's local attention (each frame attends to a window), whose memory
grows linearly: that record is long-audio-local-1.1b.

Builds the architecture with random weights (tests/fixtures/build_tiny_model.py --family tdt-1.1b-full, as make
bench-full-size does), exports it and makes the int8 variant and the metadata (the export, quantize and metadata
commands, each in its venv), then decodes recordings made of the built-in clips with pauses
(evalset.speech_with_pauses) with the sherpa-onnx Python wheel (`nemo2sherpa sherpa-decode`, 2 threads, one
recording a process), lengths interleaved between the variants. Per run: the model's load time, the decode time, the
real-time factor and the peak RSS of the decoding process (wait4); a process the kernel kills for memory is recorded as such, with the machine's memory.
The shortest built-in clip gives the model's own footprint (`load`), so the table shows what the audio adds.

Writes benchmarks/results/long-audio-1.1b.{json,md}. Random weights decode noise, which costs the decoder more
symbols than speech would; the encoder, where the memory goes, costs what trained weights cost.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
from datetime import date
from pathlib import Path

from full_size import ROOT, build, command, machine, write_record

from nemo2sherpa import localattn, venvs
from nemo2sherpa.child import run_measured

NAME = "long-audio-1.1b"
MINUTES = (1.0, 5.0, 10.0)
LOCAL_MINUTES = (1.0, 10.0, 30.0)  # with local attention: past what full attention fits in this machine's memory
VARIANTS = ("int8", "fp32")
DISTURBED = 0.10  # other load above which a row's times are flagged
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "include")}
RECORDING = ("import sys; from pathlib import Path; from nemo2sherpa.evalset import write_speech_with_pauses; "
             "print(write_speech_with_pauses(Path(sys.argv[1]), float(sys.argv[2])))")


def stage(venv: str, *args: str) -> None:
    """One nemo2sherpa command in its venv; SystemExit naming it when it fails."""
    proc, usage = run_measured([str(venvs.ensure(venv) / "bin" / "python"), "-m", "nemo2sherpa", *args], env=ENV)
    if proc.returncode != 0:
        raise SystemExit(f"nemo2sherpa {args[0]} failed (exit {proc.returncode})")
    print(f"{args[0]}: {usage.wall_s:.0f} s, peak RSS {usage.peak_rss_bytes / 1e9:.2f} GB", flush=True)


def recordings(folder: Path, minutes: tuple[float, ...]) -> dict[str, tuple[Path, float]]:
    """The shortest built-in clip (`load`) and one recording a length: name -> (wav, seconds)."""
    py = str(venvs.ensure("download") / "bin" / "python")  # the source step's venv: soundfile writes the wavs
    out = {}
    for m in minutes:
        wav = folder / f"{m:g}min.wav"
        proc, _ = run_measured([py, "-c", RECORDING, str(wav), str(m * 60)], env=ENV)
        if proc.returncode != 0:
            raise SystemExit(f"making the {m:g}-minute recording failed (exit {proc.returncode})")
        out[f"{m:g} min"] = (wav, float(proc.stdout.strip().splitlines()[-1]))
    code = ("import json; from nemo2sherpa.audio import load_clips, read_wav; d = {str(c.path): len(read_wav(c.path)[0]) "
            "/ read_wav(c.path)[1] for c in load_clips()}; p = min(d, key=d.get); print(json.dumps([p, d[p]]))")
    proc, _ = run_measured([py, "-c", code], env=ENV)
    path, seconds = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"load": (Path(path), float(seconds)), **out}


def decode(bundle: Path, variant: str, wav: Path, seconds: float) -> dict:
    """sherpa-onnx on one recording in a process of its own: wall, RTF, peak RSS, tokens; or how it was killed."""
    cmd = [str(venvs.ensure("onnx") / "bin" / "python"), "-m", "nemo2sherpa", "sherpa-decode", "--bundle", str(bundle),
           "--variant", variant, "--threads", "2", str(wav)]
    proc, usage = run_measured(cmd, env=ENV)
    row = {"variant": variant, "audio_s": round(seconds, 1), "wall_s": round(usage.wall_s, 1),
           "peak_rss_bytes": usage.peak_rss_bytes, "other_load": round(usage.other_load, 2),
           "exit_code": proc.returncode}
    if proc.returncode == -signal.SIGKILL:
        row["killed"] = "by the kernel (out of memory)"
    elif proc.returncode == 0:
        said = json.loads(proc.stdout.strip().splitlines()[-1])
        row.update(load_s=said["load_s"], decode_s=said["decode_s"], rtf=round(said["decode_s"] / seconds, 3),
                   tokens=len(said["tokens"][0]))
    print(f"{variant:5} {seconds:7.1f} s audio: {row['wall_s']:7.1f} s, peak RSS {row['peak_rss_bytes'] / 1e9:6.2f} GB"
          f"{', ' + row['killed'] if 'killed' in row else ''}", flush=True)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("NEMO2SHERPA_LONG_AUDIO_WORK",
                                                                    "/tmp/nemo2sherpa-long-audio")))
    ap.add_argument("--minutes", help="recording lengths, minutes (default 1,5,10; with local attention 1,10,30)")
    ap.add_argument("--local-attention", help="export with local attention: on, or LEFT,RIGHT encoder frames")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoint, bundle and recordings in --work")
    ap.add_argument("--render", type=Path, help="only write the markdown again from this record's JSON")
    a = ap.parse_args()
    if a.render:
        render(a.render)
        return 0
    context = localattn.parse(a.local_attention)
    minutes = tuple(float(m) for m in a.minutes.split(",")) if a.minutes else LOCAL_MINUTES if context else MINUTES
    if context:
        a.work = a.work.with_name(a.work.name + "-local")
    if not (a.work / "bundle" / "encoder.int8.onnx").exists():
        shutil.rmtree(a.work, ignore_errors=True)
        a.work.mkdir(parents=True)
        nemo, bundle, reference = a.work / "model.nemo", a.work / "bundle", a.work / "reference"
        info, built = build(nemo)
        print(f"built {info['params'] / 1e9:.3f} B params in {built['wall_s']:.0f} s", flush=True)
        stage("nemo", "export", "--nemo", str(nemo), "--bundle", str(bundle), "--reference", str(reference),
              *(["--local-attention", ",".join(map(str, context))] if context else []))
        nemo.unlink()
        stage("onnx", "quantize", "--bundle", str(bundle))
        stage("onnx", "metadata", "--bundle", str(bundle), "--reference", str(reference))
    bundle = a.work / "bundle"
    wavs = recordings(a.work, minutes)
    rows = [{"recording": name, **decode(bundle, v, wav, seconds)}
            for name, (wav, seconds) in wavs.items() for v in VARIANTS]  # lengths interleaved between variants
    rec = {"made": date.today().isoformat(), "command": command("make bench-long-audio"), "machine": machine(),
           "threads": 2, "runtime": "sherpa-onnx (Python wheel), greedy search", "attention":
           localattn.describe(context), "runs": rows,
           "files": {p.name: p.stat().st_size for p in sorted(bundle.iterdir()) if p.is_file()}}
    write_record(NAME.replace("-1.1b", "-local-1.1b") if context else NAME, rec, markdown(rec))
    if not a.keep:
        shutil.rmtree(a.work, ignore_errors=True)
    return 0


def markdown(rec: dict) -> str:
    """The record as a person reads it: per variant, peak RSS and time at each length, what the audio adds."""
    m = rec["machine"]
    load = {r["variant"]: r["peak_rss_bytes"] for r in rec["runs"] if r["recording"] == "load"}
    local = rec.get("attention", localattn.FULL) != localattn.FULL
    lines = ["# Long recordings at full size: parakeet-tdt-1.1b architecture, random weights"
             + (f", {rec['attention']} attention" if local else ""), "",
             f"Made {rec['made']} by `{rec['command']}` on {m['cpus']} cores of an {m['cpu']}, {m['memory_gb']} GiB "
             f"RAM; {rec['runtime']}, {rec['threads']} threads, one recording a process.", "",
             ("NeMo's local attention (each encoder frame attends to its window; nemo2sherpa.localattn): its "
              "positions are a table of the window's offsets, so no table bounds the length; memory does, and grows "
              "linearly with the length. " if local else
              "Positions are computed in the encoder's graph: no table bounds the length; memory does, and full "
              "attention makes it grow with the square of the length. ")
             + "`added`: the peak RSS minus the same variant's "
             "on the shortest clip (the model's own footprint); `per minute`: `added` over the minutes"
             + (". " if local else ", which grows with the length. ")
             + "`other load`: the share of the machine other processes used meanwhile; over "
             f"{DISTURBED:.0%} the row's times are disturbed (its memory is not).", "",
             "| recording | variant | audio (s) | peak RSS (GB) | added (GB) | per minute (GB) | load (s) | decode (s) | "
             "RTF | other load |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rec["runs"]:
        added = (r["peak_rss_bytes"] - load[r["variant"]]) / 1e9
        per = f"{added / (r['audio_s'] / 60):.2f}" if r["recording"] != "load" else "-"
        said = r.get("killed") or ("" if r["exit_code"] == 0 else f"exit {r['exit_code']}")
        times = [f"{r[k]:.1f}" if k in r else "-" for k in ("load_s", "decode_s")] + [f"{r['rtf']:.2f}" if "rtf" in r
                                                                                     else "-"]
        lines.append(f"| {r['recording']} | {r['variant']} | {r['audio_s']:.1f} | {r['peak_rss_bytes'] / 1e9:.2f}"
                     f"{' (' + said + ')' if said else ''} | {added:.2f} | {per} | {' | '.join(times)} | "
                     f"{100 * r['other_load']:.0f}%{' (disturbed)' if r['other_load'] > DISTURBED else ''} |")
    return "\n".join(lines) + "\n"


def render(path: Path) -> None:
    """The markdown again from a record's JSON (after a change to its layout)."""
    rec = json.loads(path.read_text())
    write_record(path.stem, rec, markdown(rec))


if __name__ == "__main__":
    sys.exit(main())
