"""What a person reads in a step's log: phases that say they started and are still running (with what remains of the
step), and validate's verdict first, then its report once."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import threading
import time

import pytest

from conftest import INCLUDE, ROOT, run_cli, stage_python
from nemo2sherpa.progress import HEARTBEAT_ENV, Phases


def _messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "test.phases"]


def _heartbeats() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("heartbeat ")]


def test_a_long_phase_says_it_is_still_running_and_what_comes_next(monkeypatch, caplog):
    monkeypatch.setenv(HEARTBEAT_ENV, "0.2")
    phase = Phases(logging.getLogger("test.phases"), "p ", planned=["load", "convert", "write"])
    with caplog.at_level(logging.INFO, logger="test.phases"):
        with phase("load"):
            pass
        with phase("convert"):
            time.sleep(0.7)
        ended = len(_messages(caplog))
        time.sleep(0.5)  # a beat the phase left running would log meanwhile
        assert len(_messages(caplog)) == ended and not _heartbeats()
        with phase("write"):
            pass
    lines = _messages(caplog)
    assert lines[0] == "p load: started (then: convert, write)" and re.fullmatch(r"p load: \d+\.\d s", lines[1])
    assert lines[2] == "p convert: started (then: write)"
    beats = [x for x in lines if "still running" in x]
    assert len(beats) >= 2 and all(x.startswith("p convert: still running, ") and x.endswith(" s so far (then: write)")
                                   for x in beats), lines
    seconds = [float(re.search(r"running, ([\d.]+) s", x).group(1)) for x in beats]
    assert seconds == sorted(set(seconds)) and seconds[-1] <= phase.seconds["convert"] + 0.05, seconds  # growing
    assert lines.index(beats[-1]) < lines.index(next(x for x in lines if re.fullmatch(r"p convert: [\d.]+ s", x)))
    assert lines[-2] == "p write: started" and re.fullmatch(r"p write: \d+\.\d s", lines[-1])  # nothing remains
    assert list(phase.seconds) == ["load", "convert", "write"] and phase.seconds["convert"] >= 0.7


def test_a_phase_that_raises_stops_its_heartbeat(caplog):
    phase = Phases(logging.getLogger("test.phases"), heartbeat_s=0.1)
    with caplog.at_level(logging.INFO, logger="test.phases"), pytest.raises(RuntimeError, match="boom"):
        with phase("doomed"):
            time.sleep(0.25)
            raise RuntimeError("boom")
    assert not _heartbeats() and "doomed" in phase.seconds  # joined, and the phase still timed
    ended = len(_messages(caplog))
    time.sleep(0.3)
    assert len(_messages(caplog)) == ended and _messages(caplog)[0] == "doomed: started"  # no plan: no "then"


def test_a_quick_phase_gets_no_heartbeat_at_the_default_interval(monkeypatch, caplog):
    monkeypatch.delenv(HEARTBEAT_ENV, raising=False)
    phase = Phases(logging.getLogger("test.phases"))
    assert phase.heartbeat_s == 30
    with caplog.at_level(logging.INFO, logger="test.phases"):
        with phase("quick"):
            time.sleep(0.1)
    lines = _messages(caplog)
    assert lines[0] == "quick: started" and re.fullmatch(r"quick: \d+\.\d s", lines[1]) and len(lines) == 2


# validate's end of log, from a Report of three gates (two of them failing unless `passing`), in the ONNX venv
# (validate's own): the task log as an Airflow task shows it (level, message).
_REPORT = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
from nemo2sherpa.errors import GateFailed
from nemo2sherpa.gates import GATES, limits
from nemo2sherpa.records import ModelFigures, Validation
from nemo2sherpa.validate import Report, _finish
from nemo2sherpa.variants import BASE
passing = sys.argv[1] == "pass"
r, lim = Report(), limits(None)
r.gate("fp32: tokens.txt", True, 65, 65)
r.gate("fp32: encoder max abs diff", passing, 0.3, 1e-4, "clip a step 3")
r.gate("int8: WER vs fp32", passing, 0.5, 0.05)
result = Validation(mode="pre", model=ModelFigures(model_class="X", feat_dim=80, vocab_size=64, durations=[0, 1],
                    pred_rnn_layers=1, pred_hidden=8, encoder_layers=1, enc_hidden=8), clips=[],
                    thresholds={f"{BASE.name}_max_abs_diff": 1e-4, **{g.key: lim[g.param] for g in GATES}})
try:
    _finish(result, r, None)
except GateFailed:
    sys.exit(3)
"""
GATE_NAMES = ["fp32: tokens.txt", "fp32: encoder max abs diff", "int8: WER vs fp32"]


@pytest.mark.parametrize("passing", [True, False])
def test_validate_logs_its_verdict_first_then_its_report_once(passing):
    proc = subprocess.run([str(stage_python("onnx")), "-c", _REPORT, "pass" if passing else "fail"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(INCLUDE)})
    assert proc.returncode == (0 if passing else 3), proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    table = lines.index("INFO | gate | result | value | threshold |")
    if passing:  # the log's first line is the verdict: no gate is logged as it is decided
        assert lines[:2] == ["INFO validation PASSED (pre): 3 gates, 0 failed", "INFO # Validation: PASSED (pre)"]
        summary = []
    else:  # the verdict, then each failed gate once with its detail (the table has none)
        assert lines[:3] == ["ERROR validation FAILED (pre): 3 gates, 2 failed:",
                             "ERROR   fp32: encoder max abs diff: value=0.3 threshold=0.0001 (clip a step 3)",
                             "ERROR   int8: WER vs fp32: value=0.5 threshold=0.05"], lines[:4]
        assert lines[3] == "INFO # Validation: FAILED (pre)"
        summary = GATE_NAMES[1:]
    for name in GATE_NAMES:  # before the table: the failed ones, once each; then each gate once, in the table
        assert sum(name in x for x in lines[:table]) == (name in summary), (name, lines[:table])
        assert sum(name in x for x in lines[table:]) == 1, name
    assert "gates," not in " ".join(lines[table:])  # no second verdict after the table


def test_a_real_validate_logs_its_phases_as_they_go_and_its_verdict_before_its_table(exported, tmp_path, monkeypatch):
    """validate (pre, fp32) on a reference where NeMo's last decision on clip 0 is another token by a real margin:
    one gate fails. Its log: each phase started, still running (the interval from the step's environment), timed;
    then the verdict and the failed gate with its detail, once; then the report, every gate once in its table."""
    d = tmp_path / "x"
    shutil.copytree(exported, d)
    subprocess.run([str(stage_python("onnx")), str(ROOT / "tests" / "break_bundle.py"), str(d / "reference"),
                    "path-choice", "0.5"], check=True, capture_output=True)
    monkeypatch.setenv(HEARTBEAT_ENV, "0.05")
    report = tmp_path / "validation.json"
    proc = run_cli("onnx", "validate", "--bundle", str(d / "bundle"), "--reference", str(d / "reference"),
                   "--variants", "fp32", "--mode", "pre", "--report", str(report), check=False)
    assert proc.returncode == 3, proc.stderr[-2000:]
    gates = json.loads(report.read_text())["gates"]
    failed = [g["gate"] for g in gates if not g["passed"]]
    assert failed == ["fp32: greedy decoding == NeMo step by step"]
    lines = [x.split(" nemo2sherpa.validate ", 1)[1] for x in proc.stderr.splitlines() if " nemo2sherpa.validate " in x]
    verdict = lines.index(f"ERROR validation FAILED (pre): {len(gates)} gates, 1 failed:")
    table = lines.index("INFO | gate | result | value | threshold |")
    assert lines[verdict + 1].startswith(f"ERROR   {failed[0]}: value=") and "clip " in lines[verdict + 1]
    assert lines[verdict + 2] == "INFO # Validation: FAILED (pre)" and verdict < table
    assert any(re.fullmatch(r"INFO validate phase fp32: structure, sessions: still running, [\d.]+ s so far", x)
               for x in lines[:verdict])  # NEMO2SHERPA_HEARTBEAT_S reaches the step
    assert "INFO validate phase fp32: numeric parity: started" in lines[:verdict]
    assert not [x for x in lines[:verdict] if "value=" in x or "PASS" in x]  # no gate logged as it was decided
    for g in gates:  # each gate once in the table; before it, only the failed one, once
        assert sum(x.startswith(f"INFO | {g['gate']} | ") for x in lines[table:]) == 1, g["gate"]
        assert sum(f" {g['gate']}: value=" in x for x in lines[:table]) == (g["gate"] in failed), g["gate"]
    assert not [x for x in lines[table:] if "gates," in x or "still running" in x]
