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
