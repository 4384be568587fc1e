"""Errors a person can act on, classified once: whether retrying can help.

- permanent (PermanentError, InputError): bad input, refused credentials, a missing bucket, a file changed after
  validation. Retrying repeats the same failure: fail at once, with the fix.
- verdict (GateFailed): a validation gate failed; the bundle must not be published. Fail at once.
- transient (TransientError, and anything not classified): the Hub or the S3 endpoint unreachable, throttling,
  5xx answers, a worker killed mid-task. A retry may pass.

Every task asks `failure_kind`: the DAG's tasks fail at once on the first two and retry the third; the CLI exits
with EXIT_CODES (2 permanent, 3 verdict, 4 transient), and a parent reading a child's exit code gets the same
class back from `error_for_exit`. A virtualenv task cannot raise Airflow's exceptions (no Airflow in its venv), so it
hands a permanent failure or a verdict back as `failed_outcome(e)`, which the worker turns into a failure without
retry (`outcome_failure`).
"""

from __future__ import annotations

from typing import Any

PERMANENT, VERDICT, TRANSIENT = "permanent", "verdict", "transient"
EXIT_CODES = {PERMANENT: 2, VERDICT: 3, TRANSIENT: 4}  # the CLI's exit status for each kind
_OUTCOME = "nemo2sherpa_failed"


class PermanentError(Exception):
    """A failure retrying cannot mend; the message names the problem and the fix."""


class InputError(PermanentError):
    """Bad input: the message names the problem and the fix. The CLI prints it as one line, exit 2."""


class GateFailed(Exception):
    """A validation gate failed: the bundle must not be published."""


class TransientError(Exception):
    """A fault outside nemo2sherpa that may pass (network, throttling, 5xx): retried, with backoff."""


def failure_kind(e: BaseException) -> str:
    """PERMANENT, VERDICT or TRANSIENT, from the exception or the one it was raised from."""
    seen = e
    while seen is not None:
        if isinstance(seen, GateFailed):
            return VERDICT
        if isinstance(seen, PermanentError):
            return PERMANENT
        if isinstance(seen, TransientError):
            return TRANSIENT
        seen = seen.__cause__
    return TRANSIENT


def error_for_exit(code: int, message: str) -> Exception | None:
    """The classified error for a child `python -m nemo2sherpa` that exited with one of EXIT_CODES, else None."""
    kinds = {c: k for k, c in EXIT_CODES.items()}
    if code not in kinds:
        return None
    return {PERMANENT: PermanentError, VERDICT: GateFailed, TRANSIENT: TransientError}[kinds[code]](message)


def failed_outcome(e: BaseException) -> dict[str, Any]:
    """What a virtualenv task returns instead of raising a permanent failure or a verdict."""
    return {_OUTCOME: {"kind": failure_kind(e), "error": str(e) or type(e).__name__}}


def outcome_failure(result: Any) -> str | None:
    """The message of a task result made by failed_outcome, or None for a real result."""
    if isinstance(result, dict) and _OUTCOME in result:
        f = result[_OUTCOME]
        return f"{f['kind']} failure, not retried: {f['error']}"
    return None
