"""The runtime's thread pools, sized on purpose instead of left to each library.

A ``check()`` runs its stages one after another: OpenCV resizes, OpenVINO (or
ONNX Runtime) runs the graph, numpy's BLAS and hnswlib search the bank, OpenCV
blurs the map. Each library keeps its own pool, and a pool that keeps spinning
after its call returns takes a core from the stage that follows on a 2-core camera
PC. So the runtime gives the backend, hnswlib and OpenCV the cores (divided among
the Inspectors that run at once), measured stage by stage: on two threads OpenCV's
resize of a 900x900 frame to 512x512 took 1.9 ms less and a bottle check 1.1-2.6 ms
less, its spinning included. BLAS depends on the search: with an HNSW index its
products (refinement, Eq. 7) are small and its spinning workers slowed every other
stage 2-3x, so it stays on the calling thread, and the refinement's exact passes
over the whole bank split the bank over the index's threads instead (in two
alternating runs a bottle check 0.1 and 2.8 ms faster, a magnetic_tile one 2.0 and
4.1 ms); with exact search over a large bank the product is the biggest work of a
check, and BLAS gets the cores too (on bottle at 512x512 with a 40 000-row bank,
one BLAS thread made exact search 1.7x slower: 905 against 536 ms).

BLAS and OpenCV pools are per process, so :func:`apply_thread_plan` sets them for
the whole process; the backend and hnswlib counts are per Inspector.

Example::

    plan = plan_threads(inspectors=2)        # two cameras, one Inspector each
    apply_thread_plan(plan)                  # what Inspector(threads="auto") does
    plan.describe()                          # {"cores": 2, "backend": 1, "blas": 1, ...}
"""
from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import asdict, dataclass, replace

# OpenBLAS builds name their setter differently (numpy's wheels bundle a prefixed 64-bit-integer build)
_BLAS_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads64_",
                 "openblas_set_num_threads")
_BLAS_GETTERS = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads", "openblas_get_num_threads64_",
                 "openblas_get_num_threads")


@dataclass(frozen=True)
class ThreadPlan:
    """Thread counts for one process running ``inspectors`` Inspectors on ``cores`` cores."""

    cores: int
    inspectors: int
    policy: str      # "auto" (plan_threads) or "library" (library_default_threads)
    backend: int     # OpenVINO INFERENCE_NUM_THREADS / ONNX Runtime intra-op threads, per Inspector (0: its default)
    hnsw: int        # hnswlib query threads, per Inspector (-1: every core); also the refinement's exact passes
    blas: int        # numpy's BLAS, per process (0: by the search, see resolve_blas)
    opencv: int      # cv2.setNumThreads, per process

    def describe(self) -> dict:
        return asdict(self)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def plan_threads(inspectors: int = 1, cores: int | None = None) -> ThreadPlan:
    """The default plan: the cores shared among the Inspectors for the graph, the index and OpenCV (a
    per-process pool: sized by that share too), BLAS by the search (:func:`resolve_blas`). ``inspectors``:
    how many Inspectors check frames at the same time."""
    if not (isinstance(inspectors, int) and inspectors >= 1):
        raise ValueError(f"inspectors must be a positive integer, got {inspectors!r}")
    cores = available_cores() if cores is None else int(cores)
    if cores < 1:
        raise ValueError(f"cores must be at least 1, got {cores}")
    share = max(1, cores // inspectors)
    return ThreadPlan(cores=cores, inspectors=inspectors, policy="auto", backend=share, hnsw=share, blas=0, opencv=share)


def resolve_blas(plan: ThreadPlan, exact_search: bool) -> ThreadPlan:
    """``plan`` with ``blas`` settled when it was left to the search (0): the Inspectors' share of the cores
    for exact search, 1 with an approximate index."""
    if plan.blas:
        return plan
    return replace(plan, blas=max(1, plan.cores // plan.inspectors) if exact_search else 1)


def library_default_threads(cores: int | None = None) -> ThreadPlan:
    """What the libraries choose by themselves (every core for each pool, the backend's own default): the
    comparison point for :func:`plan_threads` (``apc-bench --threads-plan library``)."""
    cores = available_cores() if cores is None else int(cores)
    return ThreadPlan(cores=cores, inspectors=1, policy="library", backend=0, hnsw=-1, blas=cores, opencv=cores)


def _loaded_openblas() -> list[str]:
    """Paths of the OpenBLAS libraries mapped into this process (Linux), numpy's first."""
    import numpy  # noqa: F401  (loads numpy's BLAS)

    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line}
    except OSError:
        return []
    return sorted(paths)


def _blas_call(names: tuple[str, ...], *args) -> int | None:
    for path in _loaded_openblas():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in names:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype = ctypes.c_int
                result = fn(*(ctypes.c_int(a) for a in args))
                return int(result) if not args else 0
    return None


def blas_threads() -> int | None:
    """numpy's OpenBLAS thread count, or None when it cannot be read (another BLAS, another OS)."""
    return _blas_call(_BLAS_GETTERS)


def apply_thread_plan(plan: ThreadPlan) -> dict:
    """Set the process-wide pools of ``plan`` (BLAS, OpenCV); returns what is now in effect."""
    import cv2

    cv2.setNumThreads(plan.opencv)
    _blas_call(_BLAS_SETTERS, plan.blas or 1)
    return {"blas": blas_threads(), "opencv": cv2.getNumThreads()}


BACKGROUND_NICENESS = 10   # background threads' nice offset: about a tenth of a core's share when the cores are busy


def lower_this_thread_priority(niceness: int = BACKGROUND_NICENESS) -> bool:
    """Give the calling thread a lower CPU priority than the checks (Linux: a thread's own nice value), so
    that background work (the NG overlay writer's PNG encoding) runs on idle cycles instead of taking a core
    from ``check()``. Threads of one process share their scheduling group, so this holds where a process's
    nice value would not. Returns False where the OS does not allow it; nothing else changes.

    Example::

        threading.Thread(target=lambda: (lower_this_thread_priority(), write_all())).start()
    """
    if niceness <= 0 or not hasattr(os, "setpriority") or not hasattr(threading, "get_native_id"):
        return False
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + int(niceness)))
    except OSError:
        return False
    return True
