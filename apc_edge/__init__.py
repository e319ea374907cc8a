"""apc-edge runtime: torch-free anomaly inspection on camera PCs.

Example::

    from apc_edge import Inspector
    result = Inspector("models/bottle").check(frame)
    print(result.score, result.is_anomalous)
"""
from .inspector import Inspector, Result
from .manifest import ModelDirError
from .scoring import ScoreError

__all__ = ["Inspector", "Result", "ModelDirError", "ScoreError"]
__version__ = "0.1.0"
