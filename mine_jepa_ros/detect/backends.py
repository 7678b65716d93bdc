"""Which backend runs a model: torch for ``.safetensors`` checkpoints, ONNX Runtime for ``.onnx``;
and the one factory that makes a model file a detector.

:func:`load_detector` is what the node, ``replay`` (bags and image folders), ``calibrate`` and the
benchmarks call: the model on its backend (:func:`load_classifier`), the thresholds in force (the
ones asked for, else the model's operating point) and the pipeline around them.
:func:`load_classifier` returns a
:class:`~mine_jepa_ros.detect.pipeline.WindowClassifier` with the model's
:class:`~mine_jepa_ros.detect.metadata.ModelMetadata` attached. ``backend="auto"`` picks by the
file: an ``.onnx`` model runs on ONNX Runtime (the vehicle install, no torch), anything else is a
checkpoint for torch. Asking a backend for a file it cannot run, or for torch where it is not
installed, is a one-line :class:`~mine_jepa_ros.errors.UserError` that says what to do. This
module imports neither torch nor onnxruntime until a model is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from mine_jepa_ros.detect.localise import check_localisation
from mine_jepa_ros.detect.merging import Thresholds
from mine_jepa_ros.detect.operating_point import thresholds_in_force
from mine_jepa_ros.detect.pipeline import DetectionPipeline, PipelineConfig, WindowClassifier
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


@dataclass(frozen=True)
class DetectorOptions:
    """How a model file runs as a detector: its backend and device, the thresholds, and the window,
    stride, flip views and rescoring (None: the model's own, the recipe its operating point was chosen with)."""

    backend: str = "auto"  # auto (by the model file) | torch | onnxruntime
    providers: tuple[str, ...] = ()  # onnxruntime: cpu, cuda, tensorrt (empty: CUDA where available, else CPU)
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 64
    thresholds: Thresholds | float | Sequence[float] | Mapping[str, float] | None = None  # None: the operating point
    raw: bool = False  # the model without its operating point (temperature 1, no thresholds): what calibrate fits
    window: int | None = None  # must be the model's; None: the model's
    stride: int | None = None
    flip_views: int | None = None  # 1, 2 or 4 (detect.views)
    rescoring: str | None = None  # windows | centred (detect.rescore)
    localisation: str | None = None  # echo | windows (detect.localise); None: the pipeline configuration's (echo)


def load_detector(model_path: Path | str, options: DetectorOptions, config: PipelineConfig | None = None) -> DetectionPipeline:
    """The detector a model file makes: :func:`load_classifier`, the thresholds in force (a bad or
    missing one is a UserError starting with ``thresholds:``) and the pipeline with ``config``.
    ``options.raw`` (torch checkpoints only) drops the checkpoint's operating point, so the
    probabilities are uncalibrated and the thresholds are ``options.thresholds`` (0.5 when None)."""
    if options.raw:
        classifier = _raw_classifier(model_path, options)
        thresholds = Thresholds.of(classifier.class_names, 0.5 if options.thresholds is None else options.thresholds)
    else:
        classifier = load_classifier(model_path, backend=options.backend, device=options.device,
                                     precision=options.precision, batch_size=options.batch_size,
                                     providers=options.providers)
        try:
            thresholds = thresholds_in_force(classifier.class_names, options.thresholds,
                                             classifier.metadata.op(str(model_path)), str(model_path))
        except UserError as exc:
            raise UserError(f"thresholds: {exc}") from exc
    config = replace(config or PipelineConfig(), thresholds=thresholds)
    if options.localisation is not None:
        config = replace(config, localisation=check_localisation(options.localisation))
    try:
        return DetectionPipeline(classifier, config, options.window, options.stride, options.flip_views, options.rescoring)
    except UserError as exc:  # a recipe the model cannot run (window, stride, flip views, rescoring)
        raise UserError(f"{model_path}: {exc}") from exc


def _raw_classifier(model_path: Path | str, options: DetectorOptions) -> WindowClassifier:
    if backend_for(model_path, options.backend) != "torch":
        raise UserError(f"{model_path}: an exported model's temperature is part of its graph; calibrate the "
                        ".safetensors checkpoint it was exported from")
    from mine_jepa_ros.detect.classifier import PatchClassifier
    from mine_jepa_ros.detect.model import load_checkpoint

    model = load_checkpoint(model_path)
    model.metadata = replace(model.metadata, operating_point=None)
    return PatchClassifier(model, device=options.device, batch_size=options.batch_size, precision=options.precision)
