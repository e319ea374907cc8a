"""Run code in a fresh interpreter with some top-level modules unimportable (a camera PC without torch, a
runtime without OpenVINO or hnswlib).

Example::

    proc = run_without("torch", "from apc_edge.cli.update import main\\nsys.exit(main(sys.argv))", "--help")
"""
import subprocess
import sys

_PRELUDE = r"""
import sys, importlib.abc
BLOCKED = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[2:]
"""
# appended: the blocked modules must still be absent when the code is done
_CHECK = "\nassert not BLOCKED & set(m.split('.')[0] for m in sys.modules), 'a blocked module was imported'\n"


def run_without(modules: str, code: str, *args: str) -> subprocess.CompletedProcess:
    """``code`` (``sys.argv`` = ``args``) with the comma-separated ``modules`` blocked; its completed process."""
    return subprocess.run([sys.executable, "-c", _PRELUDE + code + _CHECK, modules, *args],
                          capture_output=True, text=True)
