"""Which backend runs a model: torch for ``.safetensors`` checkpoints, ONNX Runtime for ``.onnx``.

:func:`load_classifier` is what the node and ``replay`` call: it returns a
:class:`~mine_jepa_ros.detect.pipeline.WindowClassifier` with the model's
:class:`~mine_jepa_ros.detect.metadata.ModelMetadata` attached. ``backend="auto"`` picks by the
file: an ``.onnx`` model runs on ONNX Runtime (the vehicle install, no torch), anything else is a
checkpoint for torch. Asking a backend for a file it cannot run, or for torch where it is not
installed, is a one-line :class:`~mine_jepa_ros.errors.UserError` that says what to do. This
module imports neither torch nor onnxruntime until a model is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mine_jepa_ros.detect.pipeline import WindowClassifier
from mine_jepa_ros.errors import UserError

BACKENDS = ("auto", "torch", "onnxruntime")
ONNX_SUFFIX = ".onnx"


def backend_for(model_path: Path | str, backend: str = "auto") -> str:
    """``torch`` or ``onnxruntime`` for this file; an impossible request is a UserError."""
    if backend not in BACKENDS:
        raise UserError(f"backend {backend!r}: expected one of {BACKENDS}")
    is_onnx = Path(model_path).suffix.lower() == ONNX_SUFFIX
    if backend == "auto":
        return "onnxruntime" if is_onnx else "torch"
    if backend == "onnxruntime" and not is_onnx:
        raise UserError(f"{model_path}: the onnxruntime backend runs .onnx models; export this checkpoint with "
                        "`mine-jepa export --model CHECKPOINT --out MODEL.onnx`")
    if backend == "torch" and is_onnx:
        raise UserError(f"{model_path}: the torch backend runs .safetensors checkpoints; use backend onnxruntime "
                        "(or auto) for an ONNX model")
    return backend


def load_classifier(model_path: Path | str, backend: str = "auto", device: str = "auto", precision: str = "auto",
                    batch_size: int = 64, providers: Sequence[str] = ()) -> WindowClassifier:
    """The model at ``model_path`` as a batched window classifier on the chosen backend.

    torch: ``device`` (auto, cpu, cuda[:N]) and ``precision`` (auto, fp32, bf16) apply.
    onnxruntime: ``providers`` (cpu, cuda, tensorrt; empty = CUDA where available, else CPU, or
    the CPU alone for device ``cpu``) apply; the precision is the model's own (fp32, or INT8 from
    ``mine-jepa export --int8``), so asking for bf16 only warns.
    """
    chosen = backend_for(model_path, backend)
    if chosen == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401

            from mine_jepa_ros.detect.onnx_backend import OnnxClassifier
        except ModuleNotFoundError as exc:
            raise UserError(f"{model_path}: the onnxruntime backend needs the 'onnxruntime' package "
                            "(pip install onnxruntime, or onnxruntime-gpu for CUDA / TensorRT)") from exc
        onnx_clf = OnnxClassifier(model_path, batch_size=batch_size, providers=providers, device=device)
        if precision == "bf16":
            onnx_clf.warnings.append(f"precision bf16 does not apply to ONNX Runtime; {Path(model_path).name} runs "
                                     f"at its own precision ({onnx_clf.precision_name})")
        return onnx_clf
    if providers:
        raise UserError(f"providers {list(providers)}: only the onnxruntime backend has execution providers; "
                        f"{model_path} runs on torch (use device instead)")
    try:
        from mine_jepa_ros.detect.classifier import PatchClassifier
        from mine_jepa_ros.detect.model import load_checkpoint
    except ModuleNotFoundError as exc:
        raise UserError(f"{model_path}: a .safetensors checkpoint runs on torch, which is not installed here "
                        f"(no module {exc.name!r}): pip install 'mine_jepa_ros[torch]', or export the model with "
                        "`mine-jepa export` and run the .onnx file") from exc
    return PatchClassifier(load_checkpoint(model_path), device=device, batch_size=batch_size, precision=precision)
