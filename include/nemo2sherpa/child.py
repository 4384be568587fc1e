"""`python -m nemo2sherpa ...` in a child process that imports this same library."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .records import Usage

INCLUDE = Path(__file__).resolve().parents[1]


def _cmd(args: list[str], python: str | Path) -> list[str]:
    return [str(python), "-m", "nemo2sherpa", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(INCLUDE)}


# What a step's processes inherit from the worker: the system's basics, the network's settings (proxies, CA bundles)
# and the settings of nemo2sherpa and of the installers it runs. Never Airflow's connections, variables or config, nor
# cloud or Hub credentials: a checkpoint is untrusted input (its weights file is a pickle), and the steps that load it
# need none of them. The step that reads the run's inputs (source) gets the Hub's settings and the run's credentials.
INHERITED = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP", "SHELL", "TERM",
    "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "SSL_CERT_FILE",
    "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "AWS_CA_BUNDLE", "GIT_SSL_CAINFO",
    "NIX_SSL_CERT_FILE", "XDG_CACHE_HOME", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES"})
INHERITED_PREFIXES = ("LC_", "NEMO2SHERPA_", "UV_", "PIP_", "npm_config_", "NPM_CONFIG_", "CARGO_", "RUSTUP_", "OMP_",
                      "MKL_")
INPUT_SETTINGS = ("HF_ENDPOINT", "HF_HOME", "HF_HUB_CACHE", "HF_HUB_DISABLE_TELEMETRY", "HF_HUB_OFFLINE",
                  "HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT", "HF_HUB_ENABLE_HF_TRANSFER")
CREDENTIALS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
               "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE",
               "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")
# Forced in every step: torch.load refuses pickles that call code, whatever a caller asks for.
SAFE = {"TORCH_FORCE_WEIGHTS_ONLY_LOAD": "1"}


def step_environment(environ: dict[str, str], reads_inputs: bool = False,
                     credentials: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a step's process, from the worker's: INHERITED (and INHERITED_PREFIXES), plus, for the step
    that reads the run's inputs, the Hub's settings and the credentials it was given (`credentials`, else the
    worker's own, as `make convert` runs); SAFE on top."""
    env = {k: v for k, v in environ.items() if k in INHERITED or k.startswith(INHERITED_PREFIXES)}
    if reads_inputs:
        env.update({k: environ[k] for k in INPUT_SETTINGS if k in environ})
        env.update(credentials if credentials is not None else {k: environ[k] for k in CREDENTIALS if k in environ})
    return {**env, **SAFE}


def held_credentials(environ: dict[str, str] | None = None) -> list[str]:
    """The names of the credentials and Airflow settings a process holds (for its log: which it was given)."""
    environ = os.environ if environ is None else environ
    return sorted(k for k in environ if k in CREDENTIALS or k.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))
                  or (k.startswith("AIRFLOW__") and any(w in k for w in ("SECRET", "PASSWORD", "FERNET", "SQL"))))


def run_module(args: list[str], python: str | Path = sys.executable, **kw) -> subprocess.CompletedProcess:
    """`python -m nemo2sherpa <args>` in a child process (text mode), the project's include/ on its path."""
    return subprocess.run(_cmd(args, python), text=True, env=_env(), **kw)


def run_measured(cmd: list[str], env: dict[str, str] | None = None,
                 tree_memory: bool = True) -> tuple[subprocess.CompletedProcess, Usage]:
    """Run cmd with stdout captured (stderr passes through); also its wall time, peak RSS, the peak memory of its
    whole process tree, its CPU time and how busy the rest of the machine was meanwhile.

    peak_rss_bytes comes from wait4(): the largest resident set of the child and of any process it waited for
    (a stage's own children, such as the sherpa-onnx decoder), in bytes. Linux carries the parent's own
    high-water mark into a child at exec, so the figure is the child's only when the parent is small (the
    pipeline's step runners are); a child of a large process reports its own_peak_rss() instead.
    peak_tree_bytes is the most the child and every process under it held at once, sampled every second (tree_pss):
    what the machine held for the step when its processes overlap (not sampled with tree_memory off: a caller whose
    steps measure their own). other_load is the share of the machine's CPUs (0..1) other processes used meanwhile.
    """
    with tempfile.TemporaryFile("w+") as out:
        t0, busy0 = time.monotonic(), machine_busy_seconds()
        proc = subprocess.Popen(cmd, text=True, env=env, stdout=out)
        tree = TreeMemory(proc.pid) if tree_memory else None
        _, status, usage = os.wait4(proc.pid, 0)
        if tree:
            tree.stop()
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        wall, busy = time.monotonic() - t0, machine_busy_seconds() - busy0
        out.seek(0)
        stdout = out.read()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, None)
    cpu = usage.ru_utime + usage.ru_stime
    return done, Usage(wall_s=round(wall, 2), peak_rss_bytes=usage.ru_maxrss * 1024,
                       peak_tree_bytes=tree.peak if tree else None, cpu_s=round(cpu, 2),
                       other_load=round(max(0.0, busy - cpu) / max(wall * (os.cpu_count() or 1), 1e-9), 3))


def machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has been busy since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class TreeMemory:
    """Samples, on a thread, the summed PSS of a process and its descendants; `peak` after stop()."""

    def __init__(self, pid: int, every: float = 1.0) -> None:
        import threading

        self.pid, self.every, self.peak = pid, every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="tree-memory")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_pss(self.pid))
            self._stop.wait(self.every)

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join()


def tree_pss(pid: int) -> int:
    """The memory a process and every process under it hold, in bytes, from /proc/<pid>/status (cheap: no page-table
    walk, so sampling it does not load the machine it measures): their private and shared-memory pages summed, plus
    the largest file-backed resident set among them (a model file mapped by several of them is counted once)."""
    parents: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            parents[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, grew = {pid}, True
    while grew:
        more = {p for p, pp in parents.items() if pp in tree and p not in tree}
        tree |= more
        grew = bool(more)
    private, files = 0, 0
    for p in tree:
        try:
            fields = {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in
                      Path(f"/proc/{p}/status").read_text().splitlines() if line.startswith("Rss"))}
        except (OSError, ValueError):
            continue
        private += fields.get("RssAnon", 0) + fields.get("RssShmem", 0)
        files = max(files, fields.get("RssFile", 0))
    return private + files


def run_module_measured(args: list[str], python: str | Path = sys.executable,
                        env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, Usage]:
    """run_module, measured (see run_measured), in `env` (default: this process's) with include/ on its path."""
    return run_measured(_cmd(args, python), env={**(os.environ if env is None else env), "PYTHONPATH": str(INCLUDE)})


def memory_gib() -> float:
    """The machine's memory (MemTotal), GiB."""
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("MemTotal:")) / 2**20


# How a process killed for memory exits: SIGKILL, seen directly or through a shell (128 + 9).
KILLED = (-signal.SIGKILL, 128 + signal.SIGKILL)


def killed_for_memory(when: str) -> str:
    """Why a process that exited by SIGKILL (KILLED) stopped, in words, with the machine's memory; `when`: how far it
    got."""
    return (f"killed (SIGKILL, as the kernel's OOM killer or a container's memory limit kills) on a machine with "
            f"{memory_gib():.1f} GiB, {when}: the machine's limit, not the bundle's")


def own_peak_rss() -> int:
    """This process's peak resident set (VmHWM) in bytes: its own, unlike wait4's, which starts at its parent's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")
