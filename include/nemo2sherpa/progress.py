"""Progress for task logs: a line at every 10% of a big file, with the rate so far; phase timings."""

from __future__ import annotations

import logging
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


class Phases:
    """Wall seconds of a step's named phases, in the order they ran (a phase run twice adds up); each logged as it
    ends. Steps record them in their reports, and the full-size record shows where the time goes."""

    def __init__(self, log: logging.Logger, prefix: str = "") -> None:
        self.log, self.prefix, self.seconds = log, prefix, {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        """Time the block as phase `name`."""
        t0 = time.monotonic()
        try:
            yield
        finally:
            dt = time.monotonic() - t0
            self.seconds[name] = round(self.seconds.get(name, 0.0) + dt, 2)
            self.log.info("%s%s: %.1f s", self.prefix, name, dt)
