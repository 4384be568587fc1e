"""Run a command and kill it with SIGKILL once its resident memory passes a limit, as the kernel's OOM killer (or a
container's memory limit) does; exit as it died. Tests use it to give a real runtime a machine smaller than the one
they run on.

    python memory_watchdog.py LIMIT_MB COMMAND [ARG ...]
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def rss_mb(pid: int) -> float:
    """The process's resident set now, in MB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    except (OSError, StopIteration):
        return 0.0


def main() -> None:
    limit, cmd = float(sys.argv[1]), sys.argv[2:]
    proc = subprocess.Popen(cmd)
    while proc.poll() is None:
        if rss_mb(proc.pid) > limit:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            break
        time.sleep(0.02)
    if proc.returncode < 0:  # die as the child died, so the caller sees the signal
        if -proc.returncode != signal.SIGKILL:  # SIGKILL has no handler to reset
            signal.signal(-proc.returncode, signal.SIG_DFL)
        os.kill(os.getpid(), -proc.returncode)
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
