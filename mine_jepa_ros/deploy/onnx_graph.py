"""Rewrites of an exported ONNX graph that ONNX Runtime runs faster, with the same numbers.

:func:`attention_to_3d`: torch's exporter writes each timm attention block at opset 23 as

    qkv (B, S, 3·H·D) -> Reshape (B, S, 3, H, D) -> Transpose (3, B, H, S, D) -> Slice q | k | v
        -> Squeeze -> Attention (4-D) -> Transpose (B, S, H, D) -> Reshape (B, S, H·D)

ONNX's Attention (opset 23) also takes 3-D inputs with ``q_num_heads`` / ``kv_num_heads`` and then
returns (B, S, H·D) itself. The last axis of timm's qkv is ordered (3, H, D), so its three thirds
are q, k and v with their heads in order, and the block becomes

    x -> MatMul + Add with the q | k | v thirds of the qkv weight and bias -> Attention (3-D, H heads) -> (B, S, H·D)

or (where qkv is not a constant-weight MatMul + Add, and for static INT8) a ``Split`` of qkv in three.
On a 2-core CPU this takes a fifth off the INT8 model's time (1.26x the windows/s); the
three projections share one dynamic quantisation of x. Only a block that matches the pattern
exactly (constant shapes, slice bounds and permutations, no other reader of the intermediate
tensors) is rewritten; anything else is left as exported. Needs ``onnx`` (the ``export`` extra).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper


@dataclass
class _Graph:
    """Lookups over one graph: producers, consumers and constant values of tensors."""

    graph: onnx.GraphProto

    def __post_init__(self) -> None:
        self.producer = {out: node for node in self.graph.node for out in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.constants = {init.name: numpy_helper.to_array(init) for init in self.graph.initializer}
        for node in self.graph.node:
            if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.outputs = {out.name for out in self.graph.output}

    def only_consumer(self, name: str, op_type: str) -> onnx.NodeProto | None:
        """The node that alone reads ``name``, when it is an ``op_type`` and ``name`` is no graph output."""
        users = self.consumers.get(name, [])
        if len(users) != 1 or users[0].op_type != op_type or name in self.outputs:
            return None
        return users[0]

    def made_by(self, name: str, op_type: str) -> onnx.NodeProto | None:
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def constant(self, node: onnx.NodeProto, index: int) -> list[int] | None:
        if index >= len(node.input) or node.input[index] not in self.constants:
            return None
        return [int(v) for v in np.asarray(self.constants[node.input[index]]).reshape(-1)]


def _perm(node: onnx.NodeProto) -> list[int]:
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), [])


def _match_block(g: _Graph, attention: onnx.NodeProto) -> tuple[str, int, list[onnx.NodeProto], str] | None:
    """(qkv tensor, heads, nodes the rewrite removes, output tensor) of one 4-D attention block, or None."""
    if len([i for i in attention.input if i]) != 3 or len([o for o in attention.output if o]) != 1:
        return None
    if any(a.name in ("q_num_heads", "kv_num_heads") for a in attention.attribute):
        return None  # 3-D already
    removed: list[onnx.NodeProto] = [attention]
    transpose: onnx.NodeProto | None = None
    for part, name in enumerate(attention.input[:3]):
        squeeze = g.made_by(name, "Squeeze")
        slice_ = g.made_by(squeeze.input[0], "Slice") if squeeze is not None else None
        if squeeze is None or slice_ is None or g.constant(squeeze, 1) != [0]:
            return None
        if g.constant(slice_, 1) != [part] or g.constant(slice_, 2) != [part + 1] or g.constant(slice_, 3) != [0]:
            return None
        if len(slice_.input) > 4 and g.constant(slice_, 4) != [1]:
            return None
        if not (g.only_consumer(slice_.output[0], "Squeeze") and g.only_consumer(squeeze.output[0], "Attention")):
            return None
        source = g.made_by(slice_.input[0], "Transpose")
        if source is None or (transpose is not None and source is not transpose):
            return None
        transpose = source
        removed += [squeeze, slice_]
    assert transpose is not None
    reshape = g.made_by(transpose.input[0], "Reshape")
    if reshape is None or _perm(transpose) != [2, 0, 3, 1, 4] or transpose.output[0] in g.outputs \
            or len(g.consumers.get(transpose.output[0], [])) != 3 or not g.only_consumer(reshape.output[0], "Transpose"):
        return None
    shape = g.constant(reshape, 1)
    if shape is None or len(shape) != 5 or shape[2] != 3 or min(shape[3:]) < 1:
        return None
    heads, head_size = shape[3], shape[4]
    after = g.only_consumer(attention.output[0], "Transpose")
    merge = g.only_consumer(after.output[0], "Reshape") if after is not None else None
    if after is None or merge is None or _perm(after) != [0, 2, 1, 3]:
        return None
    merged = g.constant(merge, 1)
    if merged is None or len(merged) != 3 or merged[2] != heads * head_size:
        return None
    return reshape.input[0], heads, [*removed, transpose, reshape, after, merge], merge.output[0]


def attention_to_3d(model: onnx.ModelProto, separate_qkv: bool = True) -> int:
    """Rewrite every 4-D attention block of ``model`` (in place) to a 3-D Attention fed by three
    q, k, v projections (``separate_qkv``, where qkv is a constant projection) or a Split of qkv;
    the number of blocks rewritten. Static (QDQ) INT8 wants the Split: ONNX Runtime leaves
    MatMuls that share one quantised input unfused, in fp32."""
    g = _Graph(model.graph)
    replacement: dict[int, list[onnx.NodeProto]] = {}
    removed: set[int] = set()
    for k, attention in enumerate(n for n in model.graph.node if n.op_type == "Attention"):
        match = _match_block(g, attention)
        if match is None:
            continue
        qkv, heads, nodes, output = match
        q, k_, v = (f"{qkv}_attention{k}_{part}" for part in "qkv")
        attrs: dict[str, Any] = {a.name: helper.get_attribute_value(a) for a in attention.attribute}
        attrs.update(q_num_heads=heads, kv_num_heads=heads)
        name = attention.name or f"attention{k}"
        projection = _split_projection(g, qkv, (q, k_, v)) if separate_qkv else None
        if projection is not None:
            new_nodes, new_inits, old_nodes = projection
            model.graph.initializer.extend(new_inits)
            nodes = [*nodes, *old_nodes]
        else:
            new_nodes = [helper.make_node("Split", [qkv], [q, k_, v], name=f"{name}_split_qkv", axis=-1, num_outputs=3)]
        replacement[id(attention)] = [*new_nodes, helper.make_node("Attention", [q, k_, v], [output], name=f"{name}_3d", **attrs)]
        removed.update(id(n) for n in nodes)
    if not replacement:
        return 0
    nodes_out: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if id(node) in replacement:
            nodes_out.extend(replacement[id(node)])
        elif id(node) not in removed:
            nodes_out.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes_out)
    _drop_unused(model.graph)
    return len(replacement)


def _split_projection(g: _Graph, qkv: str, parts: tuple[str, str, str]
                      ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], list[onnx.NodeProto]] | None:
    """When ``qkv`` = MatMul(x, W) + b with W (in, 3·out) and b constant, and only the block reads
    it: three MatMul + Add nodes writing ``parts`` from the thirds of W and b (new nodes, new
    initializers, the nodes they replace; W and b go when nothing else reads them)."""
    if not g.only_consumer(qkv, "Reshape"):
        return None
    add = g.made_by(qkv, "Add")
    matmul = g.made_by(add.input[0], "MatMul") if add is not None else None
    if add is None or matmul is None or not g.only_consumer(matmul.output[0], "Add"):
        return None
    weight, bias = g.constants.get(matmul.input[1]), g.constants.get(add.input[1])
    if weight is None or bias is None or weight.ndim != 2 or bias.shape != (weight.shape[1],) or weight.shape[1] % 3:
        return None
    nodes, inits = [], []
    for part, (w, b) in zip(parts, zip(np.split(weight, 3, axis=1), np.split(bias, 3))):
        inits += [numpy_helper.from_array(np.ascontiguousarray(w), f"{part}_weight"),
                  numpy_helper.from_array(np.ascontiguousarray(b), f"{part}_bias")]
        nodes += [helper.make_node("MatMul", [matmul.input[0], f"{part}_weight"], [f"{part}_matmul"], name=f"{part}_matmul"),
                  helper.make_node("Add", [f"{part}_matmul", f"{part}_bias"], [part], name=f"{part}_add")]
    return nodes, inits, [matmul, add]


def _drop_unused(graph: onnx.GraphProto) -> None:
    """Remove Constant nodes, initializers and value_info entries that nothing reads any more."""
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    live = [node for node in graph.node if node.op_type != "Constant" or any(o in read for o in node.output)]
    del graph.node[:]
    graph.node.extend(live)
    used = {name for node in graph.node for name in (*node.input, *node.output)} | {o.name for o in graph.output}
    keep_init = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep_init)
    keep_info = [info for info in graph.value_info if info.name in used]
    del graph.value_info[:]
    graph.value_info.extend(keep_info)
