"""Errors a person can act on, classified once: whether retrying can help.

- permanent (PermanentError, InputError): bad input, refused credentials, a missing bucket, a file changed after
  validation. Retrying repeats the same failure: fail at once, with the fix.
- verdict (GateFailed): a validation gate failed; the bundle must not be published. Fail at once.
- transient (TransientError, and the network's own failures, TRANSIENT_TYPES): the Hub or the S3 endpoint
  unreachable, throttling, 5xx answers. A retry may pass. (A worker killed mid-task is Airflow's to retry.)
- anything else is permanent: an error nobody classified (a refused pickle, a JSON error, a child killed for
  memory) would repeat on a retry, at the cost of another 1.1B restore; it fails at once, naming its type.

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
FAILURE_XCOM = "failure"  # the XCom key a failed task keeps its error under (the DAG's), for the bundle report


class PermanentError(Exception):
    """A failure retrying cannot mend; the message names the problem and the fix."""


class InputError(PermanentError):
    """Bad input: the message names the problem and the fix. The CLI prints it as one line, exit 2."""


class GateFailed(Exception):
    """A validation gate failed: the bundle must not be published."""


class TransientError(Exception):
    """A fault outside nemo2sherpa that may pass (network, throttling, 5xx): retried, with backoff."""


# The faults a retry may mend, by class name (the network libraries' own, matched anywhere in an exception's class
# hierarchy, so this module imports none of them): a connection refused, reset or timed out, a read cut short.
TRANSIENT_TYPES = frozenset({
    "ConnectionError", "TimeoutError", "ConnectTimeoutError", "ReadTimeoutError", "EndpointConnectionError",
    "ConnectTimeout", "ReadTimeout", "ChunkedEncodingError", "ProtocolError", "IncompleteRead",
    "RemoteDisconnected"})


def failure_kind(e: BaseException) -> str:
    """VERDICT, PERMANENT or TRANSIENT: the class of the outermost classified exception among `e` and those it was
    raised from (or while handling); else TRANSIENT for a declared network fault (TRANSIENT_TYPES) in that chain;
    anything else, which nobody classified, PERMANENT."""
    chain, seen = [], e
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    for x in chain:
        for kind, cls in ((VERDICT, GateFailed), (PERMANENT, PermanentError), (TRANSIENT, TransientError)):
            if isinstance(x, cls):
                return kind
    if any(c.__name__ in TRANSIENT_TYPES for x in chain for c in type(x).__mro__):
        return TRANSIENT
    return PERMANENT


def describe(e: BaseException) -> str:
    """An error in one line: its message, and its type when nobody classified it (the message alone may not say)."""
    msg = str(e) or type(e).__name__
    if isinstance(e, (PermanentError, GateFailed, TransientError)):
        return msg
    return f"{type(e).__name__}: {msg}"


def error_for_exit(code: int, message: str) -> Exception | None:
    """The classified error for a child `python -m nemo2sherpa` that exited with one of EXIT_CODES, else None."""
    kinds = {c: k for k, c in EXIT_CODES.items()}
    if code not in kinds:
        return None
    return {PERMANENT: PermanentError, VERDICT: GateFailed, TRANSIENT: TransientError}[kinds[code]](message)


def failed_outcome(e: BaseException, step: str = "") -> dict[str, Any]:
    """What a virtualenv task returns instead of raising a permanent failure or a verdict (naming the step)."""
    return {_OUTCOME: {"kind": failure_kind(e), "error": (f"{step}: " if step else "") + describe(e)}}


def outcome_failure(result: Any) -> str | None:
    """The message of a task result made by failed_outcome, or None for a real result."""
    if isinstance(result, dict) and _OUTCOME in result:
        f = result[_OUTCOME]
        return f"{f['kind']} failure, not retried: {f['error']}"
    return None
