"""Fail early, with the figures, when a machine lacks the disk or memory a model needs.

Estimates come from the checkpoint's size (measured at 1.1B: a 4.28 GB .nemo exports at 9.6 GB RSS,
quantizing its 4.2 GB fp32 encoder takes ~10 GB RSS and a full temporary copy on disk).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError

GB = 1e9
# Multiples of the .nemo size, measured at 1.1B plus a margin; and a floor for tiny models.
EXPORT_DISK = 2.5  # NeMo's extraction + fp32 ONNX + references
EXPORT_MEMORY = 2.4
QUANTIZE_DISK = 1.5  # onnxruntime's temporary copy + the int8 files
QUANTIZE_MEMORY = 2.5  # of the fp32 encoder's size: 10.0 GB measured for 4.29 GB at 1.1B (fp16: 6.8 GB)
FLOOR = 256 << 20


def free_disk(path: Path) -> int:
    """Free bytes on the file system that holds `path` (or its nearest existing parent)."""
    path = Path(path)
    while not path.exists():
        path = path.parent
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def available_memory() -> int:
    """MemAvailable from /proc/meminfo, in bytes."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 1 << 62  # unknown: do not refuse


def check(what: str, need_disk: float, disk_at: Path, need_memory: float) -> None:
    """Raise InputError naming what is short, by how much, and the fix."""
    need_disk, need_memory = max(need_disk, FLOOR), max(need_memory, FLOOR)
    disk, mem = free_disk(disk_at), available_memory()
    if disk < need_disk:
        raise InputError(f"{what} needs ~{need_disk / GB:.1f} GB free disk under {disk_at}, only {disk / GB:.1f} GB "
                         f"is free: free space there or point NEMO2SHERPA_WORKSPACE at a larger disk (nothing written)")
    if mem < need_memory:
        raise InputError(f"{what} needs ~{need_memory / GB:.1f} GB of available memory, only {mem / GB:.1f} GB is "
                         f"available: run it on a larger worker or stop other jobs (nothing written)")


def before_export(nemo: Path, out_dir: Path) -> None:
    """Refuse an export the disk or memory cannot hold, before NeMo loads."""
    size = Path(nemo).stat().st_size
    check(f"exporting {Path(nemo).name} ({size / GB:.2f} GB)", EXPORT_DISK * size, out_dir, EXPORT_MEMORY * size)


def before_quantize(bundle: Path) -> None:
    """Refuse making a variant the disk or memory cannot hold, before any work."""
    from .variants import fp32_bytes

    enc = fp32_bytes(bundle, "encoder")
    check(f"quantizing a {enc / GB:.2f} GB encoder", QUANTIZE_DISK * enc, bundle, QUANTIZE_MEMORY * enc)
