"""``mine-jepa export``: a checkpoint as a self-contained ONNX model for other runtimes.

The exported graph takes what the detector feeds the model — ``patches``, float32 (N, window,
window) intensities in 0..1, any N — and returns ``probabilities`` (N, classes): the checkpoint's
normalisation, temperature and softmax are inside the graph, so ONNX Runtime / TensorRT users need
no Python from this package, and the node and ``replay`` run it without torch
(:mod:`mine_jepa_ros.detect.onnx_backend`). The checkpoint's whole metadata (class names, window,
stride, operating point, normalisation, provenance) travels as ONNX metadata properties
(``mine_jepa.*``). At opset 23 each attention block is rewritten to ONNX's 3-D Attention
(:mod:`mine_jepa_ros.deploy.onnx_graph`). The file is written atomically and checked against the
PyTorch model with ONNX Runtime on random and structured windows before it is kept. ``int8`` quantises the checked graph
(:mod:`mine_jepa_ros.deploy.quantise`) and keeps only the INT8 model, if it passes its own check.
Needs the ``export`` extra (``onnx``, ``onnxscript``, torch).
"""

from __future__ import annotations

import hashlib
import importlib.util
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from mine_jepa_ros.atomic import atomic_file
from mine_jepa_ros.detect.model import Classifier, load_checkpoint
from mine_jepa_ros.detect.onnx_backend import INPUT_NAME, OUTPUT_NAME, model_properties, onnx_properties_for
from mine_jepa_ros.deploy.quantise import (
    DEFAULT_MAX_F1_DROP,
    CheckWindows,
    QuantisationReport,
    quantise_model,
    structured_windows,
)
from mine_jepa_ros.errors import UserError

if TYPE_CHECKING:
    import onnx

DEFAULT_OPSET = 23  # ONNX Attention and Gelu: INT8 1.5x opset 18's windows/s, 1.26x more with onnx_graph (measured)
MAX_ABS_DIFF = 1e-4  # probabilities; fp32 graph vs fp32 PyTorch


class ProbabilityModel(torch.nn.Module):
    """(N, H, W) 0..1 intensities -> (N, classes) probabilities, or (N, classes, tokens, tokens) for a
    dense head: normalisation + model + the calibrated softmax (logits / temperature) over classes."""

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.model = model
        self.temperature = model.temperature

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(self.model.normalise(patches)) / self.temperature, dim=1)


@dataclass(frozen=True)
class ExportReport:
    path: Path
    bytes: int
    classes: list[str]
    window: int
    opset: int
    output_shape: tuple[int, ...]
    verified: bool
    max_abs_diff: float | None  # largest probability difference ONNX Runtime vs PyTorch (None: not verified)
    checked_batches: tuple[int, ...]
    quantisation: QuantisationReport | None = None  # the INT8 check (None: an fp32 model)

    def summary(self) -> str:
        check = (f"the fp32 graph matches PyTorch in ONNX Runtime (max |dp| {self.max_abs_diff:.1e} over batches of "
                 f"{list(self.checked_batches)})" if self.verified else "not verified (onnxruntime not installed)")
        kind = "fp32" if self.quantisation is None else f"INT8 ({self.quantisation.mode})"
        text = (f"{self.path}: {kind}, {self.bytes / 1e6:.1f} MB, input '{INPUT_NAME}' float32 (N, {self.window}, "
                f"{self.window}) 0..1, output '{OUTPUT_NAME}' (N, {', '.join(map(str, self.output_shape))}) over "
                f"{self.classes}, opset {self.opset}; {check}")
        return text if self.quantisation is None else text + "\n" + self.quantisation.summary()


def _require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise UserError(f"export needs the '{module}' package: pip install 'mine_jepa_ros[export]'")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_patches(window: int, batches: tuple[int, ...], seed: int = 0) -> list[np.ndarray]:
    """Test inputs in batches of the given sizes (:func:`~mine_jepa_ros.deploy.quantise.structured_windows`)."""
    return [structured_windows(window, n, seed + i) for i, n in enumerate(batches)]


def export_onnx(checkpoint: Path | str, out: Path | str, opset: int = DEFAULT_OPSET, verify: bool = True,
                check_batches: tuple[int, ...] = (1, 5, 32), int8: str | None = None,
                calibration: CheckWindows | None = None, max_f1_drop: float = DEFAULT_MAX_F1_DROP,
                separate_qkv: bool = True) -> ExportReport:
    """Export ``checkpoint`` to ``out`` (.onnx), atomically; verify with ONNX Runtime when available.
    ``int8`` (``dynamic`` or ``static``): write the quantised model instead, checked on ``calibration``.
    ``separate_qkv``: see :func:`~mine_jepa_ros.deploy.onnx_graph.attention_to_3d` (off for static INT8)."""
    src, dst = Path(checkpoint), Path(out)
    if dst.suffix != ".onnx":
        raise UserError(f"{dst}: the output file must end in .onnx")
    if not dst.parent.is_dir():
        raise UserError(f"{dst.parent}: output directory does not exist")
    if int8 is not None:
        with tempfile.TemporaryDirectory(prefix="mine_jepa_export_") as tmp:
            fp32 = export_onnx(src, Path(tmp) / "fp32.onnx", opset=opset, verify=True, check_batches=check_batches,
                               separate_qkv=int8 != "static")
            report = quantise_model(fp32.path, dst, int8, calibration, max_f1_drop)
        return ExportReport(path=dst, bytes=dst.stat().st_size, classes=fp32.classes, window=fp32.window,
                            opset=opset, output_shape=fp32.output_shape, verified=True,
                            max_abs_diff=fp32.max_abs_diff, checked_batches=fp32.checked_batches, quantisation=report)
    _require("onnx")
    _require("onnxscript")
    import onnx

    from mine_jepa_ros.deploy.onnx_graph import attention_to_3d

    model = load_checkpoint(src).float().eval()
    meta = model.metadata
    wrapper = ProbabilityModel(model).eval()
    proto = torch_to_onnx(wrapper, meta.window, opset)
    if opset >= 23:
        attention_to_3d(proto, separate_qkv)
    props = {**onnx_properties_for(meta), "mine_jepa.source_checkpoint": src.name, "mine_jepa.source_sha256": _sha256(src)}
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "mine_jepa_ros"
    max_diff: float | None = None
    verified = verify and importlib.util.find_spec("onnxruntime") is not None
    with atomic_file(dst) as tmp:
        onnx.save(proto, str(tmp))
        onnx.checker.check_model(str(tmp))
        if verified:
            max_diff = _compare_with_torch(tmp, wrapper, meta.window, check_batches)
            if max_diff > MAX_ABS_DIFF:
                raise UserError(f"{dst}: ONNX Runtime differs from PyTorch by {max_diff:.2e} (> {MAX_ABS_DIFF}); not written")
    return ExportReport(path=dst, bytes=dst.stat().st_size, classes=list(meta.class_names), window=meta.window, opset=opset,
                        output_shape=meta.output_shape, verified=verified, max_abs_diff=max_diff,
                        checked_batches=check_batches if verified else ())


def torch_to_onnx(wrapper: ProbabilityModel, window: int, opset: int) -> onnx.ModelProto:
    """The graph as torch's exporter writes it (dynamic batch axis), before any rewrite."""
    example = torch.rand(2, window, window)
    batch = torch.export.Dim("batch", min=1, max=65536)
    with torch.no_grad():
        program = torch.onnx.export(wrapper, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes=({0: batch},), opset_version=opset, dynamo=True, verbose=False)
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    return program.model_proto


def _compare_with_torch(path: Path, wrapper: ProbabilityModel, window: int, batches: tuple[int, ...]) -> float:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for x in check_patches(window, batches):
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        with torch.no_grad():
            want = wrapper(torch.from_numpy(x)).numpy()
        if got.shape != want.shape:
            raise UserError(f"{path}: ONNX output shape {got.shape} differs from PyTorch {want.shape}")
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


def read_onnx_metadata(path: Path | str) -> dict[str, str]:
    """The ``mine_jepa.*`` metadata properties of an exported model."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {k: v for k, v in model_properties(session).items() if k.startswith("mine_jepa.")}
