"""The validation limits a run may set, declared once: each is a DAG param, a `convert`/`validate` flag,
a keyword of validate and a threshold in validation.json. None means "report only" (or, for the long-recording
gate's length, "off").

One WER-drift limit per variant made from fp32 (from the variant registry), sherpa-onnx's WER vs NeMo, and the
length of the recording the long-recording gate decodes. Pure Python: the Airflow side imports it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .errors import InputError
from .variants import BASE, MADE, Variant


@dataclass(frozen=True)
class Gate:
    """A validation limit a run may set."""

    param: str  # DAG param and validate keyword; the flag is --param-with-dashes
    default: float | None
    title: str  # the form's field title
    description: str  # the form's and --help's text (each adds how to turn the gate off)
    key: str  # its threshold's key in validation.json
    label: str  # how VALIDATION.md names it
    unit: str = ""  # what the number is: "" for a WER (a limit, <= x), "s" for a length in seconds
    none_means: str = "report only"  # what an empty value does

    def shown(self, x: float | None) -> str:
        """The value as VALIDATION.md and --help show it: "<= 0.05", "600 s", or what none means."""
        if x is None:
            return self.none_means
        return f"{x:g} {self.unit}" if self.unit else f"<= {x:g}"

    @property
    def flag(self) -> str:
        """The command-line flag: --int8-wer-max for int8_wer_max."""
        return "--" + self.param.replace("_", "-")


def threshold(value: Any, name: str) -> float | None:
    """A gate threshold from a param or flag: a number >= 0, or none/null for report-only."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "off", "")):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = -1.0
    if not x >= 0:
        raise InputError(f"{name}={value!r} is not a threshold: give a number >= 0 (a WER, 0.05 = 5%; a length in "
                         f"seconds for long_recording_s) or none")
    return x


def drift_gate(v: Variant) -> Gate:
    """A made variant's limit on how far its greedy transcripts may drift from fp32's."""
    return Gate(f"{v.name}_wer_max", v.drift_max, f"{v.name} WER drift limit",
                f"Fail validation if the {v.name} bundle's greedy transcripts differ from the {BASE.name} bundle's by "
                f"more than this word error rate (0.05 = 5%) in any clip-length bucket, on the evaluation clips the "
                f"model knows.",
                f"{v.name}_wer_vs_{BASE.name}", f"{v.name} WER vs {BASE.name}")


SHERPA_WER = Gate("sherpa_wer_max", 0.35, "sherpa-onnx WER limit",
                  "Fail validation if sherpa-onnx's end-to-end transcripts differ from NeMo's by more than this WER, "
                  "on the evaluation clips the model knows (NeMo within 10% WER of the reference text; every clip of "
                  "a set without texts). Loose on purpose: sherpa-onnx computes its own fbank features.",
                  "sherpa_wer_vs_nemo", "sherpa-onnx WER vs NeMo")
# The deployment's default length (env NEMO2SHERPA_LONG_RECORDING_S: workers with less memory set less), else 10
# minutes: full attention holds scores for every pair of encoder frames, so the memory sherpa-onnx needs grows with
# the square of the length (at 1.1B, ~16 GB for 10 minutes in int8: benchmarks/results/long-audio-1.1b.md).
LONG_RECORDING = Gate("long_recording_s", threshold(os.environ.get("NEMO2SHERPA_LONG_RECORDING_S", "600"),
                                                   "NEMO2SHERPA_LONG_RECORDING_S"),
                      "Long-recording gate (s)",
                      "Length of the recording the long-recording gate decodes: the run's evaluation clips in turn, "
                      "with pauses, at least this long, decoded at once by sherpa-onnx in every variant and held "
                      "equal to the reference decoder on sherpa-onnx's own features; the card states it, with the "
                      "memory sherpa-onnx took. Needs memory for full attention over the whole recording.",
                      "long_recording_s", "long recording", unit="s", none_means="off")
DRIFT: dict[str, Gate] = {v.name: drift_gate(v) for v in MADE}
GATES: tuple[Gate, ...] = (*DRIFT.values(), SHERPA_WER, LONG_RECORDING)
GATE_DEFAULTS: dict[str, float | None] = {g.param: g.default for g in GATES}


def limits(given: dict[str, Any] | None = None) -> dict[str, float | None]:
    """Every gate's limit: the given ones checked, the others at their defaults (InputError on a bad one)."""
    given = given or {}
    return {g.param: threshold(given.get(g.param, g.default), g.param) for g in GATES}
