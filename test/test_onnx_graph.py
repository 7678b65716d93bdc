"""The attention rewrite of exported graphs: 3-D Attention, the same probabilities, and a block that
differs from the exporter's pattern left as it was."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mine_jepa_ros.detect.model import load_checkpoint

pytestmark = pytest.mark.slow  # exports ViT-Tiny graphs

onnx = pytest.importorskip("onnx", reason="the export extra is not installed: pip install '.[export]'")
pytest.importorskip("onnxscript", reason="the export extra is not installed: pip install '.[export]'")
onnxruntime = pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install '.[export]'")

from mine_jepa_ros.deploy.export import ProbabilityModel, check_patches, torch_to_onnx  # noqa: E402
from mine_jepa_ros.deploy.onnx_graph import attention_to_3d  # noqa: E402

DEPTH, HEADS = 12, 3  # ViT-Tiny


@pytest.fixture(scope="module")
def exported(busy_checkpoint: Path) -> onnx.ModelProto:
    return torch_to_onnx(ProbabilityModel(load_checkpoint(busy_checkpoint).float().eval()).eval(), 96, 23)


def run(model: onnx.ModelProto, x: np.ndarray, names: tuple[str, ...] = ("probabilities",)) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(list(names), {"patches": x})


def probabilities(model: onnx.ModelProto) -> np.ndarray:
    """On structured and random windows in batches of 1, 7 and 32."""
    return np.concatenate([run(model, x)[0] for x in check_patches(96, (1, 7, 32))])


def copy_of(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def ops(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


def qkv_reshape(model: onnx.ModelProto) -> onnx.NodeProto:
    """The first block's Reshape of qkv to (B, S, 3, H, D)."""
    producer = {out: node for node in model.graph.node for out in node.output}
    attention = next(node for node in model.graph.node if node.op_type == "Attention")
    node = producer[attention.input[0]]
    while node.op_type != "Reshape":
        node = producer[node.input[0]]
    return node


def test_every_block_becomes_3d_attention_with_the_same_probabilities(exported: onnx.ModelProto) -> None:
    model = copy_of(exported)
    assert attention_to_3d(model) == DEPTH
    onnx.checker.check_model(model, full_check=True)
    attention = [node for node in model.graph.node if node.op_type == "Attention"]
    assert len(attention) == DEPTH
    for node in attention:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["q_num_heads"] == attrs["kv_num_heads"] == HEADS
    assert ops(model).count("Transpose") == ops(exported).count("Transpose") - 2 * DEPTH  # the patch embedding's stays
    assert "Split" not in ops(model) and "Squeeze" not in ops(model) and "Slice" not in ops(model)
    assert ops(model).count("MatMul") == ops(exported).count("MatMul") + 2 * DEPTH  # q, k, v projections
    read = {name for node in model.graph.node for name in node.input}
    assert all(init.name in read for init in model.graph.initializer), "no initializer left unused"
    np.testing.assert_allclose(probabilities(model), probabilities(exported), atol=1e-6)
    assert attention_to_3d(model) == 0  # already 3-D


def test_a_block_read_elsewhere_is_left_as_exported(exported: onnx.ModelProto) -> None:
    model = copy_of(exported)
    reshaped = qkv_reshape(model).output[0]  # the (B, S, 3, H, D) tensor becomes a graph output too
    model.graph.output.append(onnx.helper.make_tensor_value_info(reshaped, onnx.TensorProto.FLOAT, None))
    assert attention_to_3d(model) == DEPTH - 1
    x = check_patches(96, (4,))[0]
    got, extra = run(model, x, ("probabilities", reshaped))
    assert extra.shape == (4, 37, 3, HEADS, 64)
    np.testing.assert_allclose(got, run(exported, x)[0], atol=1e-6)


def test_qkv_read_elsewhere_is_split_instead_of_projected(exported: onnx.ModelProto) -> None:
    model = copy_of(exported)
    qkv = qkv_reshape(model).input[0]
    model.graph.output.append(onnx.helper.make_tensor_value_info(qkv, onnx.TensorProto.FLOAT, None))
    assert attention_to_3d(model) == DEPTH
    assert ops(model).count("Split") == 1
    np.testing.assert_allclose(probabilities(model), probabilities(exported), atol=1e-6)


def test_static_int8_keeps_one_projection_and_splits_it(exported: onnx.ModelProto) -> None:
    model = copy_of(exported)
    assert attention_to_3d(model, separate_qkv=False) == DEPTH
    assert ops(model).count("Split") == DEPTH and ops(model).count("MatMul") == ops(exported).count("MatMul")
    np.testing.assert_allclose(probabilities(model), probabilities(exported), atol=1e-6)
