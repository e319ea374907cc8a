"""The runtime must run on a camera PC without torch: block its import and run a check."""
from blocked import run_without

RUNTIME = """
import numpy as np
import apc_edge
from apc_edge import Inspector
import apc_edge.sources, apc_edge.cli
r = Inspector(sys.argv[0]).check(np.full((120, 160, 3), 90, np.uint8))
print("score", r.score)
"""


def test_runtime_imports_and_runs_without_torch(model_dir_openvino):
    proc = run_without("torch", RUNTIME, str(model_dir_openvino))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("score ")


def test_missing_backend_or_index_library_names_the_extra(model_dir_openvino, model_dir_hnsw):
    load = "from apc_edge import Inspector, ModelDirError\ntry:\n    Inspector(sys.argv[0])\nexcept ModelDirError as e:\n    print(e)\n"
    out = run_without("openvino", load, str(model_dir_openvino))
    assert out.returncode == 0 and "pip install 'apc-edge[openvino]'" in out.stdout, out.stderr
    out = run_without("hnswlib", load, str(model_dir_hnsw))
    assert out.returncode == 0 and "pip install 'apc-edge[hnsw]'" in out.stdout, out.stderr
    exact = "from apc_edge import Inspector\nprint(Inspector(sys.argv[0], index='exact').index.name)\n"
    out = run_without("hnswlib", exact, str(model_dir_hnsw))
    assert out.returncode == 0 and out.stdout.strip() == "exact", out.stderr


def test_workstation_commands_without_torch_say_what_to_install(tmp_path):
    for entry in ("train", "export"):
        code = f"from apc_edge.cli.workstation import {entry}\nsys.exit({entry}())\n"
        out = run_without("torch", code, str(tmp_path), "--out", str(tmp_path / "x"))
        assert out.returncode == 2, out.stderr
        assert "needs torch" in out.stderr and "apc-edge[workstation]" in out.stderr
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
