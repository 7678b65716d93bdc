"""``mine-jepa export``: a checkpoint as a self-contained ONNX model for other runtimes.

The exported graph takes what the detector feeds the model — ``patches``, float32 (N, window,
window) intensities in 0..1, any N — and returns ``probabilities`` (N, classes): the checkpoint's
normalisation and the softmax are inside the graph, so ONNX Runtime / TensorRT users need no
Python from this package. The class names, window, stride and provenance travel as ONNX metadata
properties (``mine_jepa.*``). The file is written atomically and, when ``onnxruntime`` is
installed, checked against the PyTorch model on random and structured patches before it is kept.
Needs the ``export`` extra (``onnx``, ``onnxscript``; ``onnxruntime`` for the check).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mine_jepa_ros.atomic import atomic_file
from mine_jepa_ros.detect.model import MineClassifier, load_checkpoint
from mine_jepa_ros.errors import UserError

INPUT_NAME = "patches"
OUTPUT_NAME = "probabilities"
DEFAULT_OPSET = 18
MAX_ABS_DIFF = 1e-4  # probabilities; fp32 graph vs fp32 PyTorch


class ProbabilityModel(torch.nn.Module):
    """(N, H, W) 0..1 intensities -> (N, classes) probabilities: normalisation + model + the
    calibrated softmax (logits / temperature)."""

    def __init__(self, model: MineClassifier) -> None:
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
    verified: bool
    max_abs_diff: float | None  # largest probability difference ONNX Runtime vs PyTorch (None: not verified)
    checked_batches: tuple[int, ...]

    def summary(self) -> str:
        check = (f"ONNX Runtime matches PyTorch (max |dp| {self.max_abs_diff:.1e} over batches of {list(self.checked_batches)})"
                 if self.verified else "not verified (onnxruntime not installed)")
        return (f"{self.path}: {self.bytes / 1e6:.1f} MB, input '{INPUT_NAME}' float32 (N, {self.window}, {self.window}) "
                f"0..1, output '{OUTPUT_NAME}' (N, {len(self.classes)}) = {self.classes}, opset {self.opset}; {check}")


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
    """Test inputs: uniform noise, speckle-like gamma noise with a bright blob and a dark shadow."""
    rng = np.random.default_rng(seed)
    out = []
    for n in batches:
        x = rng.uniform(0, 1, (n, window, window)).astype(np.float32)
        speckle = np.clip(rng.gamma(1.0, 0.2, (n, window, window)), 0, 1).astype(np.float32)
        speckle[:, window // 3 : window // 2, window // 3 : window // 2] = 0.95
        speckle[:, window // 3 : window // 2, window // 2 : 3 * window // 4] = 0.02
        out.append(np.concatenate([x[: (n + 1) // 2], speckle[: n // 2]]))
    return out


def export_onnx(checkpoint: Path | str, out: Path | str, opset: int = DEFAULT_OPSET, verify: bool = True,
                check_batches: tuple[int, ...] = (1, 5, 32)) -> ExportReport:
    """Export ``checkpoint`` to ``out`` (.onnx), atomically; verify with ONNX Runtime when available."""
    _require("onnx")
    _require("onnxscript")
    import onnx

    src, dst = Path(checkpoint), Path(out)
    if dst.suffix != ".onnx":
        raise UserError(f"{dst}: the output file must end in .onnx")
    if not dst.parent.is_dir():
        raise UserError(f"{dst.parent}: output directory does not exist")
    model = load_checkpoint(src).float().eval()
    meta = model.metadata
    wrapper = ProbabilityModel(model).eval()
    example = torch.rand(2, meta.window, meta.window)
    batch = torch.export.Dim("batch", min=1, max=65536)
    with torch.no_grad():
        program = torch.onnx.export(wrapper, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes=({0: batch},), opset_version=opset, dynamo=True, verbose=False)
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    proto = program.model_proto
    props = {
        "mine_jepa.class_names": json.dumps(list(meta.class_names)),
        "mine_jepa.window": str(meta.window),
        "mine_jepa.stride": str(meta.stride),
        "mine_jepa.arch": meta.arch,
        "mine_jepa.probe_mode": meta.probe_mode,
        "mine_jepa.input": f"{INPUT_NAME}: float32 (N, {meta.window}, {meta.window}) intensities 0..1 (normalisation is in the graph)",
        "mine_jepa.output": f"{OUTPUT_NAME}: float32 (N, {len(meta.class_names)}) softmax(logits / temperature) over class_names",
        "mine_jepa.operating_point": json.dumps(meta.operating_point),  # "null" when not calibrated
        "mine_jepa.source_checkpoint": src.name,
        "mine_jepa.source_sha256": _sha256(src),
    }
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
                        verified=verified, max_abs_diff=max_diff, checked_batches=check_batches if verified else ())


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
    _require("onnx")
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props if p.key.startswith("mine_jepa.")}
