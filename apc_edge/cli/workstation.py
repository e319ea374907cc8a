"""Entry points of the workstation commands (apc-train, apc-export): torch is imported only when they run,
so on a camera PC without the workstation extra they say what to install instead of a traceback.

Example::

    $ apc-train data/bottle --out runs/bottle       # on a runtime-only install
    apc-train: needs torch (the training side): pip install 'apc-edge[workstation]' (torch==2.13.0 CPU build first)
"""
from __future__ import annotations

import importlib
import sys

WORKSTATION_MODULES = ("torch", "onnx", "nncf")


def _run(prog: str, module: str) -> int:
    try:
        main = importlib.import_module(module).main
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in WORKSTATION_MODULES:
            raise
        print(f"{prog}: needs {missing} (the training side): pip install 'apc-edge[workstation]' (with the "
              f"torch==2.13.0 CPU build installed first); a camera PC needs only the runtime commands", file=sys.stderr)
        return 2
    return main()


def train() -> int:
    return _run("apc-train", "apc_edge.export.cli_train")


def export() -> int:
    return _run("apc-export", "apc_edge.export.cli_export")
