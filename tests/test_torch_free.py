"""The runtime must run on a camera PC without torch: block its import and run a check."""
import subprocess
import sys

SCRIPT = r"""
import sys
import importlib.abc

class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
        return None

sys.meta_path.insert(0, BlockTorch())
import numpy as np
import apc_edge
from apc_edge import Inspector
import apc_edge.sources, apc_edge.cli
r = Inspector(sys.argv[1]).check(np.full((120, 160, 3), 90, np.uint8))
assert "torch" not in sys.modules
print("score", r.score)
"""


def test_runtime_imports_and_runs_without_torch(model_dir_openvino):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(model_dir_openvino)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("score ")


BLOCK = r"""
import sys, importlib.abc
BLOCKED = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[2:]
"""


def run_without(modules: str, code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + code, modules, *args], capture_output=True, text=True)


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
