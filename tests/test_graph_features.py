"""Training features through OpenVINO equal torch's, image by image, in order."""
import numpy as np
import pytest

from apc_edge.export.backbones import build_backbone
from apc_edge.export.embedder import PatchEmbedder
from apc_edge.export.graph_features import FeatureEngine
from apc_edge.preprocess import Preprocessor


def test_openvino_features_equal_torch_in_order(synthetic_category):
    embedder = PatchEmbedder(build_backbone("mobilenet_v2")).eval()
    pre = Preprocessor(resize=(96, 128))
    paths = sorted((synthetic_category / "train" / "good").glob("*.png"))[:5]
    fast = FeatureEngine(embedder, pre.input_hw)
    slow = FeatureEngine(embedder, pre.input_hw, engine="torch")
    assert (fast.name, slow.name) == ("openvino", "torch")
    a, b = list(fast.embed(pre, paths)), list(slow.embed(pre, paths))
    assert len(a) == len(b) == 5 and a[0].shape == (embedder.dim, 12, 16)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=1e-4 * float(np.abs(y).max()))
    assert not np.allclose(a[0], a[1])           # different images, kept apart and in order


def test_unknown_engine_is_refused():
    with pytest.raises(ValueError, match="feature engine"):
        FeatureEngine(PatchEmbedder(build_backbone("mobilenet_v2", weights="random")), (64, 64), engine="tpu")
