"""Transfer progress for task logs: a line at every 10% of a big file, with the rate so far."""

from __future__ import annotations

import logging
import threading
import time

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
