"""Progress for task logs: a line at every 10% of a big file, with the rate so far; phases timed, started and
still running (a line every HEARTBEAT_S) said as they go."""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager
from typing import Iterator

BIG = 64 << 20  # smaller files move in a moment: no progress lines


class Progress:
    """`update(done)` with the bytes moved so far (thread-safe); logs "<verb> <name>: N% of S bytes, R MB/s"
    each time another 10% is reached, for files of BIG bytes or more."""

    def __init__(self, log: logging.Logger, verb: str, name: str, size: int) -> None:
        self.log, self.verb, self.name, self.size = log, verb, name, size
        self.t0, self.next = time.monotonic(), 10
        self.lock = threading.Lock()

    @property
    def wanted(self) -> bool:
        """Only files big enough to take a while get progress lines."""
        return self.size >= BIG

    def update(self, done: int) -> None:
        """Log percent and MB/s each time another tenth of the file is done."""
        if not self.wanted:
            return
        with self.lock:
            pct = 100 * done / self.size
            if pct >= self.next:
                self.log.info("%s %s: %3.0f%% of %s bytes, %.1f MB/s", self.verb, self.name, pct, f"{self.size:,}",
                              done / 1e6 / max(time.monotonic() - self.t0, 1e-6))
                self.next = int(pct // 10) * 10 + 10


HEARTBEAT_S = 30.0  # a phase still running after this long says so, and again every as long
HEARTBEAT_ENV = "NEMO2SHERPA_HEARTBEAT_S"  # overrides HEARTBEAT_S (tests: a fraction of a second)


def heartbeat_seconds() -> float:
    """Seconds between "still running" lines of a long phase: NEMO2SHERPA_HEARTBEAT_S (0 turns them off), else (unset
    or not a number) HEARTBEAT_S."""
    try:
        return float(os.environ.get(HEARTBEAT_ENV) or HEARTBEAT_S)
    except ValueError:
        return HEARTBEAT_S


def _seconds(dt: float, step: float) -> str:
    """A phase's age for a progress line: whole seconds, tenths where the lines come more often than once a second."""
    return f"{dt:.0f}" if step >= 1 else f"{dt:.1f}"


class Phases:
    """Wall seconds of a step's named phases, in the order they ran (a phase run twice adds up). Each phase logs
    "<prefix><phase>: started" as it begins, "still running, N s so far" every `heartbeat_s` (default
    heartbeat_seconds()) while it runs, and its seconds as it ends. Given the step's `planned` phase names, the first
    two also name what remains of the step ("(then: a, b)"). Steps record the seconds in their reports, and the
    full-size record shows where the time goes."""

    def __init__(self, log: logging.Logger, prefix: str = "", planned: list[str] | None = None,
                 heartbeat_s: float | None = None) -> None:
        self.log, self.prefix, self.seconds = log, prefix, {}
        self.planned, self.started = list(planned or []), set()
        self.heartbeat_s = heartbeat_seconds() if heartbeat_s is None else heartbeat_s

    def remaining(self) -> list[str]:
        """The planned phases not started yet."""
        return [p for p in self.planned if p not in self.started]

    def _then(self) -> str:
        rest = self.remaining()
        return f" (then: {', '.join(rest)})" if rest else ""

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        """Time the block as phase `name`; a daemon thread says it is still running while it runs past heartbeat_s,
        stopped (and joined) when the block ends, however it ends."""
        self.started.add(name)
        then = self._then()
        self.log.info("%s%s: started%s", self.prefix, name, then)
        t0, stop = time.monotonic(), threading.Event()

        def beat() -> None:
            while not stop.wait(self.heartbeat_s):
                self.log.info("%s%s: still running, %s s so far%s", self.prefix, name,
                              _seconds(time.monotonic() - t0, self.heartbeat_s), then)

        beating = threading.Thread(target=beat, name=f"heartbeat {name}", daemon=True) \
            if self.heartbeat_s > 0 else None
        if beating:
            beating.start()
        try:
            yield
        finally:
            stop.set()
            if beating:
                beating.join()  # its last line (if one was being written) comes before the phase's end
            dt = time.monotonic() - t0
            self.seconds[name] = round(self.seconds.get(name, 0.0) + dt, 2)
            self.log.info("%s%s: %.1f s", self.prefix, name, dt)
