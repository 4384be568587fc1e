"""The runtime matrix (compat step): real sherpa-onnx wheels, the CLI, sherpa-onnx-node and the Rust C API client
decoding a validated bundle; a runtime inside the range that decodes otherwise fails; a runtime that cannot be
installed is an error naming it."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap

import pytest

from conftest import INCLUDE, run_cli, stage_python


@pytest.fixture(scope="module")
def matrix(validated):
    """The runtime matrix run once on the validated bundle: its printed summary; compatibility.json in the bundle."""
    return json.loads(run_cli("onnx", "compat", "--bundle", str(validated / "bundle"), "--reference",
                              str(validated / "reference"), "--variants", "fp32,int8").stdout.strip().splitlines()[-1])


def in_onnx_venv(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(stage_python("onnx")), "-c", f"import sys; sys.path.insert(0, {str(INCLUDE)!r})\n"
                           + textwrap.dedent(code)], capture_output=True, text=True, env=env)


def test_the_matrix_measures_each_layouts_range_and_the_releases_outside_it(validated, matrix):
    """The fixture bundle in the big models' layout: fp32's encoder weights in encoder.weights, int8 one file. Each
    variant is decoded by the runtimes at its layout's edges and the newest of each kind; every runtime inside a
    variant's range gives the reference's tokens and times, those outside fail or decode wrongly, as measured."""
    assert matrix["passed"] and matrix["ranges"] == {
        "fp32": "sherpa-onnx >= 1.12.36 (or >= 1.12.21 run from the model's folder, as its working directory)",
        "int8": "sherpa-onnx >= 1.12.14"}
    c = json.loads((validated / "bundle" / "compatibility.json").read_text())
    assert c["reference"] == "sherpa-onnx (Python) 2.0.1" and c["known_clips"] == ["clip01", "clip02", "clip03",
                                                                                     "clip04"]
    assert c["ranges"]["fp32"]["layout"] == "external weights" and c["ranges"]["int8"]["layout"] == "single file"
    rows = {r["runtime"]: r["variants"] for r in c["runtimes"]}
    assert {r["kind"] for r in c["runtimes"]} == {"python", "cli", "node", "c", "rust"}
    for r in c["runtimes"]:
        for v, x in r["variants"].items():
            if x["in_range"]:  # the fixture's clips are ones it knows: every runtime in the range gives the same
                assert x["status"] == "agrees", (r["runtime"], v, x)
    wrong = rows["sherpa-onnx (Python) 1.10.46"]["int8"]  # outside the range: loads the bundle, decodes it wrongly
    assert not wrong["in_range"] and wrong["status"] == "differs"
    assert len(wrong["example"]["text"]) > len(wrong["example"]["reference"])  # tokens repeated
    skip0 = rows["sherpa-onnx-offline (sherpa-onnx-bin) 1.12.13"]["int8"]  # the newest release with the skip-0 bug
    assert not skip0["in_range"] and skip0["status"] == "differs" and "table" in skip0["example"]["text"]
    bytes_loader = rows["sherpa-onnx (Python) 1.12.35"]["fp32"]  # hands the encoder over as bytes: no weights found
    assert not bytes_loader["in_range"] and bytes_loader["status"] == "fails" and "encoder.weights" in \
        bytes_loader["error"]
    assert rows["sherpa-onnx (Python) 1.12.36"]["fp32"]["status"] == "agrees"  # loads by path
    folder = "sherpa-onnx-offline (sherpa-onnx-bin) 1.12.{}, from the model's folder"
    assert rows[folder.format(21)]["fp32"]["in_range"] and rows[folder.format(21)]["fp32"]["status"] == "agrees"
    assert rows[folder.format(20)]["fp32"]["status"] == "fails"  # its onnxruntime cannot, from anywhere
    assert set(rows["sherpa-onnx (Python) 1.12.26"]) == {"int8"}  # an edge of the single-file layout only
    assert rows["sherpa-onnx-node (npm) 1.13.8"]["fp32"]["native"] == "1.13.8"  # its addon pinned, not ^1.13.8
    md = (validated / "bundle" / "VALIDATION.md").read_text()
    assert "| int8 | single file | **sherpa-onnx >= 1.12.14** |" in md and "| fp32 | external weights |" in md
    assert "| C API from Rust 2.0.1 | in range: same tokens and times | in range: same tokens and times |" in md


def test_a_runtime_inside_the_range_that_decodes_otherwise_fails_the_step(validated):
    """Were the stated range to include 1.10.46 (which ignores TDT's durations), the matrix would fail the step,
    naming runtime, variant, layout and range."""
    copy = validated.parent / "wrong-claim"
    shutil.copytree(validated / "bundle", copy)
    proc = in_onnx_venv(f"""
        from pathlib import Path
        from nemo2sherpa import compat, runtimes
        from nemo2sherpa.errors import GateFailed
        runtimes.RANGES["single file"] = runtimes.Range("single file", "1.10.0", "1.9.30", "(a wrong claim)")
        try:
            compat.check_runtimes(Path({str(copy)!r}), Path({str(validated / 'reference')!r}),
                                  ["int8"], runtimes=(runtimes.Runtime("python", "1.10.46"),), report=False)
        except GateFailed as e:
            print("GATE", e)
    """)
    assert "GATE runtimes inside a variant's stated range" in proc.stdout, proc.stderr[-2000:]
    assert "1.10.46 int8 (single file, sherpa-onnx >= 1.10.0)" in proc.stdout, proc.stdout


def test_a_runtime_killed_for_memory_is_the_machines_limit_not_the_bundles_verdict(validated):
    """A real runtime killed with SIGKILL once it holds more than 50 MB, as the kernel's OOM killer kills (a 9-minute
    recording in one call at 24 GB did so): the matrix records the machine's limit with its memory, proves nothing
    with that runtime, and does not fail the bundle."""
    from conftest import ROOT

    copy = validated.parent / "small-machine"
    shutil.copytree(validated / "bundle", copy, dirs_exist_ok=True)
    proc = in_onnx_venv(f"""
        import json, sys
        from pathlib import Path
        from nemo2sherpa import compat, runtimes
        real = compat.install
        compat.install = lambda rt, cache: runtimes.Launch(
            (sys.executable, {str(ROOT / "tests" / "memory_watchdog.py")!r}, "50", *real(rt, cache).cmd),
            real(rt, cache).env)
        r = compat.check_runtimes(Path({str(copy)!r}), Path({str(validated / 'reference')!r}), ["int8"],
                                  runtimes=(runtimes.Runtime("python", "2.0.1"),), report=False)
        print(json.dumps(r.to_json()))
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    x = result["runtimes"][0]["variants"]["int8"]
    assert result["passed"] and x["in_range"] and x["status"] == "machine limit", x
    assert x["exit_code"] == -9 and "on a machine with " in x["error"] and "not the bundle's" in x["error"], x
    assert "machine limit" in proc.stderr and "sherpa-onnx (Python) 2.0.1" in proc.stderr  # logged as a warning


@pytest.mark.parametrize("case", ["no such wheel", "no cargo"])
def test_a_runtime_that_cannot_be_installed_is_an_error_naming_it(case, tmp_path):
    """Node.js and the C compiler come from PyPI; Rust's toolchain cannot: without cargo the Rust runtime is an error
    naming the tools, how to get them, and the runtime that proves the same C API."""
    import sys

    from test_stages import bare_path

    runtime, env, want = ('Runtime("python", "0.0.1")', None, "sherpa-onnx==0.0.1 could not be installed") \
        if case == "no such wheel" else ('Runtime("rust", "2.0.1")', {"PATH": bare_path(tmp_path)},
                                          "C API from Rust needs cargo and rustc on PATH")
    proc = in_onnx_venv(f"""
        from pathlib import Path
        from nemo2sherpa.errors import PermanentError
        from nemo2sherpa.runtimes import Runtime, install
        try:
            install({runtime}, Path({str(tmp_path / 'cache')!r}))
        except PermanentError as e:
            print("ERROR", e)
    """, env=env)
    assert "ERROR " + want in proc.stdout, (proc.stdout, proc.stderr[-2000:])


def test_release_archives_are_laid_out_as_sherpa_onnx_releases_and_hold_the_validated_bytes(validated, matrix,
                                                                                            tmp_path, source_manifest):
    import hashlib
    import tarfile

    d = tmp_path / "b"
    shutil.copytree(validated / "bundle", d)
    out = json.loads(run_cli("onnx", "package", "--bundle", str(d), "--reference", str(validated / "reference"),
                             "--variants", "fp32,int8", "--source-json", str(source_manifest),
                             "--license", "CC-BY-4.0").stdout.strip().splitlines()[-1])
    assert [a["name"] for a in out["archives"]] == ["sherpa-onnx-nemo-tiny-tdt.tar",
                                                    "sherpa-onnx-nemo-tiny-tdt-int8.tar.gz"]
    digests = {f["name"]: f["sha256"] for f in json.loads((d / "validation.json").read_text())["files"]}
    for a in out["archives"]:  # the sha256 recorded as written is the file's
        assert hashlib.sha256((d / a["name"]).read_bytes()).hexdigest() == a["sha256"]
    with tarfile.open(d / "sherpa-onnx-nemo-tiny-tdt-int8.tar.gz") as tar:
        names = tar.getnames()
        top = "sherpa-onnx-nemo-tiny-tdt-int8"
        assert {f"{top}/{n}" for n in ("encoder.int8.onnx", "decoder.int8.onnx", "joiner.int8.onnx", "tokens.txt",
                                       "bpe.vocab", "README.md", "test_wavs/0.wav", "test_wavs/trans.txt")} <= set(names)
        assert all(n.startswith(top + "/") for n in names) and not any(n.endswith("encoder.onnx") for n in names)
        assert all(m.isreg() and m.mode == 0o644 and m.uid == 0 for m in tar.getmembers())
        for n in ("encoder.int8.onnx", "tokens.txt"):  # the bytes validate passed
            assert hashlib.sha256(tar.extractfile(f"{top}/{n}").read()).hexdigest() == digests[n]
        card = tar.extractfile(f"{top}/README.md").read().decode()
    assert "License: CC-BY-4.0" in card and 'encoder="encoder.int8.onnx"' in card and "--feat-dim=80" in card
    # What bounds the length a recording may have, the longest recording validate proved (the long-recording gate's)
    # and the memory sherpa-onnx took on it, per variant
    val = json.loads((d / "validation.json").read_text())
    long_audio = val["long_audio"]
    assert long_audio["positions"] == "computed in the graph from the input's length" and \
        long_audio["limit"].startswith("none but memory") and long_audio["longest_clip"] == "long-recording gate"
    assert f"- Longest recording validated: {long_audio['longest_proven_s']:g} s (" \
           f"{long_audio['longest_proven_s'] / 60:.1f} min, the long-recording gate's" in card and \
        "- Length limit: none but memory: full attention" in card
    assert f"- Memory: sherpa-onnx's peak memory decoding {long_audio['recording_s'] / 60:.1f} min at once: fp32 " \
           f"{long_audio['sherpa_peak_gb']['fp32']:g} GB, int8 {long_audio['sherpa_peak_gb']['int8']:g} GB; decoding " \
           f"the evaluation clips (the longest {long_audio['longest_clip_s']:g} s): fp32 " \
           f"{long_audio['clips_peak_gb']['fp32']:g} GB, int8 {long_audio['clips_peak_gb']['int8']:g} GB (what the " \
           f"audio adds grows with the square of the length)" in card
    assert "Supported for this variant (single file): **sherpa-onnx >= 1.12.14**" in card and "sherpa-rs" in card
    with tarfile.open(d / "sherpa-onnx-nemo-tiny-tdt.tar") as tar:  # fp32 in the big layout: its weights go along
        top = "sherpa-onnx-nemo-tiny-tdt"
        assert hashlib.sha256(tar.extractfile(f"{top}/encoder.weights").read()).hexdigest() == \
            digests["encoder.weights"]
        card = tar.extractfile(f"{top}/README.md").read().decode()
    assert "Supported for this variant (external weights): **sherpa-onnx >= 1.12.36" in card
    bundle_card = (d / "README.md").read_text()
    assert "- fp32: external weights: sherpa-onnx >= 1.12.36" in bundle_card and "- int8: single file: " in bundle_card

    broken = tmp_path / "broken"  # a model file changed after validation: refused, no archive left behind
    shutil.copytree(validated / "bundle", broken)
    with open(broken / "joiner.int8.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\x00")
    proc = run_cli("onnx", "package", "--bundle", str(broken), "--reference", str(validated / "reference"),
                   "--variants", "int8", "--source-json", str(source_manifest), check=False)
    assert proc.returncode == 2 and "joiner.int8.onnx is not the file validate passed" in proc.stderr
    assert not list(broken.glob("*.tar*"))
