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
def validated(full_bundle, source_manifest, tmp_path_factory):
    """The full fixture bundle (fp32 + int8), validated, with its reference: what compat runs after."""
    d = tmp_path_factory.mktemp("compat")
    shutil.copytree(full_bundle / "bundle", d / "bundle")
    shutil.copytree(full_bundle / "reference", d / "reference")
    run_cli("onnx", "validate", "--bundle", str(d / "bundle"), "--reference", str(d / "reference"), "--variants",
            "fp32,int8", "--source-json", str(source_manifest), "--report", str(d / "bundle" / "validation.json"))
    return d


def in_onnx_venv(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(stage_python("onnx")), "-c", f"import sys; sys.path.insert(0, {str(INCLUDE)!r})\n"
                           + textwrap.dedent(code)], capture_output=True, text=True, env=env)


def test_the_matrix_shows_the_range_and_the_release_that_decodes_tdt_wrongly(validated):
    out = json.loads(run_cli("onnx", "compat", "--bundle", str(validated / "bundle"), "--reference",
                             str(validated / "reference"), "--variants", "fp32,int8").stdout.strip().splitlines()[-1])
    assert out["passed"] and out["supported_range"] == "sherpa-onnx >= 1.12.14"
    c = json.loads((validated / "bundle" / "compatibility.json").read_text())
    assert c["reference"] == "sherpa-onnx (Python) 2.0.1" and c["known_clips"] == ["clip01", "clip02", "clip03",
                                                                                     "clip04"]
    rows = {r["runtime"]: r for r in c["runtimes"]}
    assert {r["kind"] for r in c["runtimes"]} == {"python", "cli", "node", "c-api"}
    for r in c["runtimes"]:
        if r["supported"]:  # the fixture's clips are ones it knows: every runtime in the range gives the same
            assert r["status"] == "agrees", r
    wrong = rows["sherpa-onnx (Python) 1.10.46"]  # outside the range: loads the bundle, decodes it wrongly
    assert not wrong["supported"] and wrong["status"] == "differs"
    ex = wrong["variants"]["fp32"]["example"]
    assert ex["text"] != ex["reference"] and len(ex["text"]) > len(ex["reference"])  # tokens repeated
    md = (validated / "bundle" / "VALIDATION.md").read_text()
    skip0 = rows["sherpa-onnx-offline (sherpa-onnx-bin) 1.12.13"]  # the newest release with the skip-0 bug
    assert not skip0["supported"] and skip0["status"] == "differs"
    assert "table" in skip0["variants"]["fp32"]["example"]["text"]  # "blood pressure table": a word dropped
    assert "Supported: **sherpa-onnx >= 1.12.14**" in md and "| C API from Rust 2.0.1 | yes |" in md


def test_a_runtime_inside_the_range_that_decodes_otherwise_fails_the_step(validated):
    proc = in_onnx_venv(f"""
        from pathlib import Path
        from nemo2sherpa.compat import check_runtimes
        from nemo2sherpa.errors import GateFailed
        from nemo2sherpa.runtimes import Runtime
        try:
            check_runtimes(Path({str(validated / 'bundle')!r}), Path({str(validated / 'reference')!r}), ["fp32"],
                           runtimes=(Runtime("python", "1.10.46"),), report=False)
        except GateFailed as e:
            print("GATE", e)
    """)
    assert "GATE runtimes inside the stated range" in proc.stdout and "1.10.46 fp32" in proc.stdout, proc.stderr


@pytest.mark.parametrize("case", ["no such wheel", "no node"])
def test_a_runtime_that_cannot_be_installed_is_an_error_naming_it(case, tmp_path):
    runtime, env, want = ('Runtime("python", "0.0.1")', None, "sherpa-onnx==0.0.1 could not be installed") \
        if case == "no such wheel" else ('Runtime("node", "1.13.8")', {"PATH": str(tmp_path)},
                                          "sherpa-onnx-node needs Node.js")
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


def test_release_archives_are_laid_out_as_sherpa_onnx_releases_and_hold_the_validated_bytes(validated, tmp_path,
                                                                                            source_manifest):
    import hashlib
    import tarfile

    d = tmp_path / "b"
    shutil.copytree(validated / "bundle", d)
    out = json.loads(run_cli("onnx", "package", "--bundle", str(d), "--reference", str(validated / "reference"),
                             "--variants", "fp32,int8", "--source-json", str(source_manifest),
                             "--license", "CC-BY-4.0").stdout.strip().splitlines()[-1])
    assert [a["name"] for a in out["archives"]] == ["sherpa-onnx-nemo-tiny-tdt.tar.bz2",
                                                    "sherpa-onnx-nemo-tiny-tdt-int8.tar.bz2"]
    digests = {f["name"]: f["sha256"] for f in json.loads((d / "validation.json").read_text())["files"]}
    with tarfile.open(d / "sherpa-onnx-nemo-tiny-tdt-int8.tar.bz2") as tar:
        names = tar.getnames()
        top = "sherpa-onnx-nemo-tiny-tdt-int8"
        assert {f"{top}/{n}" for n in ("encoder.int8.onnx", "decoder.int8.onnx", "joiner.int8.onnx", "tokens.txt",
                                       "bpe.vocab", "README.md", "test_wavs/0.wav", "test_wavs/trans.txt")} <= set(names)
        assert all(n.startswith(top + "/") for n in names) and not any(n.endswith("encoder.onnx") for n in names)
        for n in ("encoder.int8.onnx", "tokens.txt"):  # the bytes validate passed
            assert hashlib.sha256(tar.extractfile(f"{top}/{n}").read()).hexdigest() == digests[n]
        card = tar.extractfile(f"{top}/README.md").read().decode()
    assert "License: CC-BY-4.0" in card and 'encoder="encoder.int8.onnx"' in card and "--feat-dim=80" in card
    assert (d / "README.md").exists()

    broken = tmp_path / "broken"  # a model file changed after validation: refused, no archive left behind
    shutil.copytree(validated / "bundle", broken)
    with open(broken / "joiner.int8.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\x00")
    proc = run_cli("onnx", "package", "--bundle", str(broken), "--reference", str(validated / "reference"),
                   "--variants", "int8", "--source-json", str(source_manifest), check=False)
    assert proc.returncode == 2 and "joiner.int8.onnx is not the file validate passed" in proc.stderr
    assert not list(broken.glob("*.tar.bz2*"))
