"""The ONNX Runtime backend: an exported ``.onnx`` model as the pipeline's classifier, without torch.

``mine-jepa export`` writes a graph that takes ``patches`` (float32 (N, window, window) intensities
in 0..1) and returns ``probabilities`` (N, classes), or for a dense head (N, classes, tokens,
tokens): normalisation, the calibrated temperature and the softmax are inside the graph. The model
describes itself in ONNX metadata properties:
``mine_jepa.metadata`` holds the checkpoint's whole :class:`~mine_jepa_ros.detect.metadata.ModelMetadata`
(class names, window, stride, flip views, operating point, normalisation, provenance), and
``mine_jepa.quantisation`` says whether the weights are fp32 or INT8 (and how they were quantised).

:class:`OnnxClassifier` opens the model with the requested execution providers (CPU everywhere;
CUDA and TensorRT where ``onnxruntime-gpu`` is installed; one that is not available falls back to
the CPU with a warning, as the torch backend does for CUDA), checks the graph's input and output
against the metadata and runs one window before it is used. Any problem (a file that is not ONNX,
a truncated one, a wrong input shape, no ``mine_jepa`` metadata) is a one-line
:class:`~mine_jepa_ros.errors.CheckpointError` naming the file. Needs only ``onnxruntime`` and numpy.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from mine_jepa_ros.detect.metadata import ModelMetadata
from mine_jepa_ros.errors import CheckpointError, UserError

LOG = logging.getLogger(__name__)

INPUT_NAME = "patches"
OUTPUT_NAME = "probabilities"
METADATA_PROP = "mine_jepa.metadata"
QUANTISATION_PROP = "mine_jepa.quantisation"
QUANTISATIONS = ("none", "int8-dynamic", "int8-static")

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
"""Short provider names (the node's ``providers`` parameter) -> ONNX Runtime's; full names work too."""


def split_providers(text: str) -> tuple[str, ...]:
    """``"cuda, cpu"`` (the node's ``providers`` parameter, ``replay --providers``) -> ``("cuda", "cpu")``."""
    return tuple(p.strip() for p in text.split(",") if p.strip())


def provider_names(requested: Sequence[str], device: str = "auto") -> list[str]:
    """ONNX Runtime provider names for a request. Empty ``requested``: CUDA then CPU for device
    ``auto`` / ``cuda``, the CPU only for ``cpu`` (TensorRT is never chosen unasked: it builds an
    engine at start-up, which takes minutes)."""
    if not requested:
        return ["CPUExecutionProvider"] if device.strip().lower() == "cpu" else [PROVIDERS["cuda"], PROVIDERS["cpu"]]
    out = []
    for name in requested:
        full = PROVIDERS.get(name.strip().lower(), name.strip())
        if full not in PROVIDERS.values():
            raise UserError(f"providers: {name!r} is not one of {sorted(PROVIDERS)} (or their ONNX Runtime names)")
        out.append(full)
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _session(path: Path, providers: list[str], asked: bool) -> tuple[Any, list[str]]:
    """An InferenceSession on the providers that exist here, and the warnings about the others
    (only for providers ``asked`` for by name; the default's CUDA is a preference)."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    usable = [p for p in providers if p in available]
    warnings = []
    missing = [p for p in providers if p not in available]
    if missing and asked:
        warnings.append(f"execution provider(s) {missing} not available here (have {available}); "
                        + ("using " + ", ".join(usable) if usable else "falling back to CPUExecutionProvider"))
    if not usable:
        usable = ["CPUExecutionProvider"]
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: the one-line messages below say what went wrong
    try:
        return onnxruntime.InferenceSession(str(path), sess_options=options, providers=usable), warnings
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidProtobuf / InvalidGraph types
        raise CheckpointError(f"{path}: not a usable ONNX model ({_first_line(exc)})") from exc


def model_properties(session: Any) -> dict[str, str]:
    """The ONNX model's metadata properties (``mine_jepa.*`` and any others)."""
    return dict(session.get_modelmeta().custom_metadata_map)


def metadata_from_properties(path: Path, props: dict[str, str]) -> tuple[ModelMetadata, str]:
    """The model's :class:`ModelMetadata` and quantisation, validated, from its properties."""
    if METADATA_PROP not in props:
        raise CheckpointError(f"{path}: ONNX model without '{METADATA_PROP}' metadata (not written by `mine-jepa export`; "
                              "export the checkpoint again)")
    meta = ModelMetadata.from_json(props[METADATA_PROP], str(path))
    quantisation = props.get(QUANTISATION_PROP, "none")
    if quantisation not in QUANTISATIONS:
        raise CheckpointError(f"{path}: {QUANTISATION_PROP} {quantisation!r} is not one of {QUANTISATIONS}")
    return meta, quantisation


def _check_signature(path: Path, session: Any, meta: ModelMetadata) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise CheckpointError(f"{path}: expected one input and one output, the graph has {[i.name for i in inputs]} -> "
                              f"{[o.name for o in outputs]}")
    x, y = inputs[0], outputs[0]
    shape = list(x.shape)
    fixed = [d for d in shape[1:] if isinstance(d, int)]
    if x.type != "tensor(float)" or len(shape) != 3 or len(fixed) != 2 or fixed != [meta.window, meta.window]:
        raise CheckpointError(f"{path}: input '{x.name}' is {x.type} {shape}; the detector feeds float32 "
                              f"(N, {meta.window}, {meta.window}) windows (the metadata's window)")
    out_shape = meta.output_shape
    dims = list(y.shape)[1:]
    if (y.type != "tensor(float)" or len(dims) != len(out_shape)
            or any(isinstance(d, int) and d != want for d, want in zip(dims, out_shape))):
        raise CheckpointError(f"{path}: output '{y.name}' is {y.type} {list(y.shape)}; the metadata's {meta.output} head "
                              f"over {meta.class_names} gives float (N, {', '.join(map(str, out_shape))})")


class OnnxClassifier:
    """An exported model as a :class:`~mine_jepa_ros.detect.pipeline.WindowClassifier`."""

    def __init__(self, path: Path | str, batch_size: int = 64, providers: Sequence[str] = (), device: str = "auto") -> None:
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: model not found")
        self.session, self.warnings = _session(self.path, provider_names(providers, device), asked=bool(providers))
        for warning in self.warnings:
            LOG.warning(warning)
        self.metadata, self.quantisation = metadata_from_properties(self.path, model_properties(self.session))
        _check_signature(self.path, self.session, self.metadata)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.class_names: list[str] = list(self.metadata.class_names)
        self.window = self.metadata.window
        self.stride = self.metadata.stride
        self.batch_size = batch_size
        try:  # one window through the graph: a model that cannot run fails here, not on the first ping
            first = self._run(np.zeros((1, self.window, self.window), np.float32))
        except Exception as exc:
            raise CheckpointError(f"{self.path}: the model does not run ({_first_line(exc)})") from exc
        if first.shape != (1, *self.metadata.output_shape) or not np.all(np.isfinite(first)):
            raise CheckpointError(f"{self.path}: one window gave output {first.shape}; expected finite "
                                  f"(1, {', '.join(map(str, self.metadata.output_shape))}) probabilities")

    @property
    def device_name(self) -> str:
        return str(self.session.get_providers()[0])

    @property
    def precision_name(self) -> str:
        return "fp32" if self.quantisation == "none" else self.quantisation

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run([self.output_name], {self.input_name: batch})[0], dtype=np.float32)

    def predict(self, patches: np.ndarray) -> np.ndarray:
        """(N, window, window) float32 -> (N, *metadata.output_shape) probabilities, ``batch_size`` windows per run."""
        if patches.ndim != 3 or patches.shape[1:] != (self.window, self.window):
            raise ValueError(f"expected patches of shape (N, {self.window}, {self.window}), got {patches.shape}")
        out = np.zeros((patches.shape[0], *self.metadata.output_shape), np.float32)
        for i in range(0, patches.shape[0], self.batch_size):
            out[i : i + self.batch_size] = self._run(np.ascontiguousarray(patches[i : i + self.batch_size], dtype=np.float32))
        return out


def onnx_properties_for(meta: ModelMetadata, quantisation: str = "none") -> dict[str, str]:
    """The ``mine_jepa.*`` metadata properties an exported model carries (the whole metadata, plus
    readable copies of the fields other runtimes need)."""
    if quantisation not in QUANTISATIONS:
        raise ValueError(f"quantisation {quantisation!r}: expected one of {QUANTISATIONS}")
    return {
        METADATA_PROP: json.dumps(asdict(meta), sort_keys=True),
        QUANTISATION_PROP: quantisation,
        "mine_jepa.class_names": json.dumps(list(meta.class_names)),
        "mine_jepa.window": str(meta.window),
        "mine_jepa.stride": str(meta.stride),
        "mine_jepa.flip_views": (f"{meta.flip_views}: " + ("each window as it is" if meta.flip_views == 1 else
                                 "run each window also mirrored (2: rows reversed; 4: also columns, and both), mirror "
                                 "dense maps back, average as softmax(mean over views of log probabilities)")),
        "mine_jepa.arch": meta.arch,
        "mine_jepa.probe_mode": meta.probe_mode,
        "mine_jepa.normalisation": f"in the graph: (x - {meta.norm_mean}) / {meta.norm_std}",
        "mine_jepa.input": f"{INPUT_NAME}: float32 (N, {meta.window}, {meta.window}) intensities 0..1",
        "mine_jepa.head": meta.output,
        "mine_jepa.output": (f"{OUTPUT_NAME}: float32 (N, {', '.join(map(str, meta.output_shape))}) "
                             "softmax(logits / temperature) over class_names"
                             + (", one vector per patch token" if meta.output == "dense" else "")),
        "mine_jepa.operating_point": json.dumps(meta.operating_point),  # "null" when not calibrated
    }
