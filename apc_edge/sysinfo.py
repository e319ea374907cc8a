"""What machine a number was measured on: CPU, flags, cores, load, memory, library versions.

Example::

    info = system_info()          # {"cpu": "...", "cpu_flags": ["avx2", ...], "load_avg": [..], ...}
    peak_rss_mb()                 # this process's peak resident memory
    resident_mb()                 # {"rss": .., "anon": .., "file": ..}: now, and how much is mapped library files
"""
from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

# flags that decide which kernels the backends and hnswlib can use
INTERESTING_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                     "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "neon", "asimd")


def cpu_info(path: str = "/proc/cpuinfo") -> dict:
    """CPU model name and the interesting flags present (Linux; falls back to platform data elsewhere)."""
    model, flags = platform.processor() or platform.machine(), set()
    p = Path(path)
    if p.is_file():
        for line in p.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware") and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = set(value.split())
    return {"cpu": model, "cpu_flags": [f for f in INTERESTING_FLAGS if f in flags],
            "logical_cores": os.cpu_count()}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def system_info() -> dict:
    info = cpu_info()
    info.update(platform=platform.platform(), python=platform.python_version(),
                load_avg=[round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
                versions={d: _version(d) for d in ("numpy", "opencv-python-headless", "openvino", "onnxruntime",
                                                   "hnswlib")})
    return info


def peak_rss_mb() -> float | None:
    """Peak resident set size of this process in MB (ru_maxrss is KB on Linux, bytes on macOS); None where
    the platform does not report it."""
    try:
        import resource
    except ImportError:
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if platform.system() == "Darwin" else rss / 1024


def resident_mb(status: str = "/proc/self/status") -> dict | None:
    """This process's resident memory now, in MB: ``rss`` in all, ``anon`` (its own heap and buffers) and
    ``file`` (mapped files, mostly the code of shared libraries: shared with other processes and reclaimable).
    None where ``/proc`` is not available."""
    try:
        fields = dict(line.split(":", 1) for line in Path(status).read_text().splitlines() if ":" in line)
        kb = {key: int(fields[name].split()[0]) for key, name in (("rss", "VmRSS"), ("anon", "RssAnon"),
                                                                   ("file", "RssFile"))}
    except (OSError, KeyError, ValueError, IndexError):
        return None
    return {key: round(value / 1024, 1) for key, value in kb.items()}
