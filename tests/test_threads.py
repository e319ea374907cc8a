"""The runtime sizes the thread pools itself: the graph's, hnswlib's, numpy's BLAS and OpenCV's."""
from dataclasses import replace

import cv2
import pytest

from apc_edge import Inspector
from apc_edge.threads import ThreadPlan, apply_thread_plan, blas_threads, library_default_threads, plan_threads


def test_plan_shares_the_cores_among_inspectors():
    assert plan_threads(inspectors=1, cores=8).backend == 8
    two = plan_threads(inspectors=2, cores=8)
    assert (two.backend, two.hnsw, two.opencv) == (4, 4, 4)
    assert plan_threads(inspectors=2, cores=2).opencv == 1       # two cameras on two cores: one each
    from apc_edge.threads import resolve_blas
    assert resolve_blas(two, exact_search=True).blas == 4 and resolve_blas(two, exact_search=False).blas == 1
    assert plan_threads(inspectors=3, cores=2).backend == 1
    with pytest.raises(ValueError, match="inspectors"):
        plan_threads(inspectors=0)


def test_apply_sets_blas_and_opencv_and_reports_them():
    try:
        got = apply_thread_plan(library_default_threads(cores=2))
        assert got["opencv"] == cv2.getNumThreads() == 2
        if got["blas"] is None:
            pytest.skip("numpy's BLAS here is not OpenBLAS: its thread count cannot be read")
        assert got["blas"] == blas_threads() == 2
        got = apply_thread_plan(plan_threads(cores=2))
        assert got == {"blas": 1, "opencv": 2}
    finally:
        apply_thread_plan(plan_threads())


def test_inspector_uses_its_plan(model_dir_openvino, model_dir_hnsw):
    inspector = Inspector(model_dir_openvino)
    assert inspector.threads["policy"] == "auto" and inspector.threads["in_effect"]["opencv"] == inspector.threads["cores"]
    assert inspector.threads["blas"] == inspector.threads["cores"]          # exact search: BLAS gets the cores
    assert Inspector(model_dir_hnsw).threads["blas"] == 1                   # HNSW: small products only
    assert inspector.backend.describe()["threads"] == inspector.threads["backend"]
    plan = ThreadPlan(cores=2, inspectors=2, policy="auto", backend=1, hnsw=1, blas=1, opencv=1)
    one = Inspector(model_dir_openvino, threads=plan)
    assert one.backend.describe()["threads"] == 1
    assert Inspector(model_dir_hnsw, threads=plan).index.threads == 1
    # the refinement's exact passes take the index's share of the cores: split with it, on one thread without
    assert Inspector(model_dir_hnsw, threads=plan)._exact.threads == 1
    assert Inspector(model_dir_hnsw, threads=replace(plan, inspectors=1, hnsw=2))._exact.threads == 2
    assert Inspector(model_dir_hnsw, threads=None)._exact.threads == 1
    hnsw = Inspector(model_dir_hnsw).threads
    assert hnsw["refinement"] == hnsw["hnsw"] and "refinement" not in inspector.threads   # exact: none
    assert Inspector(model_dir_openvino, threads=None).threads == {"plan": None}
    with pytest.raises(ValueError, match="threads must be"):
        Inspector(model_dir_openvino, threads=4)


def test_a_background_thread_lowers_only_its_own_priority():
    import os
    import threading

    from apc_edge.threads import BACKGROUND_NICENESS, lower_this_thread_priority

    caller = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen = {}

    def background():
        tid = threading.get_native_id()
        seen["before"] = os.getpriority(os.PRIO_PROCESS, tid)
        seen["lowered"] = lower_this_thread_priority()
        seen["after"] = os.getpriority(os.PRIO_PROCESS, tid)

    t = threading.Thread(target=background)
    t.start()
    t.join()
    assert seen["lowered"] and seen["after"] == min(19, seen["before"] + BACKGROUND_NICENESS)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == caller      # the caller's is unchanged


def test_a_live_lane_s_overlay_writer_encodes_at_background_priority():
    import os

    from apc_edge.runtime.overlay_writer import OverlayWriter
    from apc_edge.threads import BACKGROUND_NICENESS

    writer, replay = OverlayWriter(background=True), OverlayWriter()
    try:
        import time
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:     # the writer lowers its priority as it starts
            if os.getpriority(os.PRIO_PROCESS, writer._thread.native_id) > os.getpriority(os.PRIO_PROCESS, 0):
                break
            time.sleep(0.01)
        assert os.getpriority(os.PRIO_PROCESS, writer._thread.native_id) == \
            min(19, os.getpriority(os.PRIO_PROCESS, 0) + BACKGROUND_NICENESS)
        assert os.getpriority(os.PRIO_PROCESS, replay._thread.native_id) == os.getpriority(os.PRIO_PROCESS, 0)
    finally:
        writer.close()
        replay.close()
