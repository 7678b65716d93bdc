"""INT8 models for the vehicle: ``mine-jepa export --int8``, checked before they are kept.

Two ways, both ONNX Runtime's quantiser on the exported fp32 graph:

* ``dynamic`` (the default): INT8 weights, activations quantised per batch at run time; no data
  needed. The fastest on CPUs with VNNI (measured: README).
* ``static``: INT8 weights and activations, activation ranges calibrated on windows of a patch
  store (QDQ format, per-channel weights, the matrix products quantised).

The check runs both models through the detector's own ONNX backend on windows from the calibration
store. With labelled windows it reports, before and after: macro-F1 of the window classes, per
object class the Pd of its windows (at the model's operating point, or argmax without one), and
the false alarms (background windows flagged as an object); a macro-F1 drop beyond
``max_f1_drop`` refuses the model (nothing is written). Without a store the agreement with fp32 is
reported on structured test windows, and the accuracy is not checked (the summary says so). The
INT8 file carries the fp32 model's ``mine_jepa.*`` metadata, its quantisation, and the check.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mine_jepa_ros.atomic import atomic_file
from mine_jepa_ros.detect.merging import Thresholds, window_labels
from mine_jepa_ros.detect.onnx_backend import QUANTISATION_PROP, OnnxClassifier, model_properties
from mine_jepa_ros.evaluate.scoring import classification_metrics
from mine_jepa_ros.errors import UserError

MODES = ("dynamic", "static")
DEFAULT_MAX_F1_DROP = 0.02
CHECK_PROP = "mine_jepa.quantisation_check"
CALIBRATION_WINDOWS = 256


@dataclass(frozen=True)
class CheckWindows:
    """Windows to calibrate and check on: float32 (N, W, W) intensities 0..1 and their labels
    (class indices; -1 unlabelled), and where they came from."""

    patches: np.ndarray
    labels: np.ndarray
    source: str
    class_names: tuple[str, ...] = ()  # the labels' classes (empty: unlabelled)

    @property
    def labelled(self) -> np.ndarray:
        return np.flatnonzero(self.labels >= 0)


@dataclass(frozen=True)
class WindowAccuracy:
    """One model on labelled windows."""

    macro_f1: float
    pd: dict[str, float]  # object class -> share of its windows flagged as that class
    false_alarms: int  # background windows flagged as any object class
    background_windows: int
    windows: int

    @classmethod
    def of(cls, probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
           thresholds: Thresholds | None) -> WindowAccuracy:
        """A window is flagged as the detector flags it (:func:`~mine_jepa_ros.detect.merging.window_labels`:
        its arg-max object class, when that reaches its threshold; None: the arg-max alone)."""
        names = list(class_names)
        flagged = window_labels(probs, thresholds)
        pd = {name: float((flagged[labels == k] == k).mean()) for k, name in enumerate(names) if k > 0 and (labels == k).any()}
        background = labels == 0
        return cls(macro_f1=classification_metrics(labels, probs.argmax(1), names).macro_f1, pd=pd,
                   false_alarms=int((flagged[background] > 0).sum()), background_windows=int(background.sum()),
                   windows=int(len(labels)))

    def line(self) -> str:
        pd = ", ".join(f"{k} {v:.2f}" for k, v in self.pd.items())
        return f"macro-F1 {self.macro_f1:.3f}, Pd {pd}, {self.false_alarms}/{self.background_windows} background windows flagged"


@dataclass(frozen=True)
class QuantisationReport:
    mode: str
    source: str  # the windows it was checked on
    windows: int
    agreement: float  # share of windows with the same argmax as fp32
    max_abs_diff: float  # largest probability difference to fp32
    decision: str  # "operating point" thresholds or "argmax"
    fp32: WindowAccuracy | None  # None: no labelled windows, accuracy not checked
    int8: WindowAccuracy | None
    max_f1_drop: float

    @property
    def f1_drop(self) -> float | None:
        return None if self.fp32 is None or self.int8 is None else self.fp32.macro_f1 - self.int8.macro_f1

    @property
    def accepted(self) -> bool:
        return self.f1_drop is None or self.f1_drop <= self.max_f1_drop

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "f1_drop": self.f1_drop, "accepted": self.accepted}

    def summary(self) -> str:
        head = (f"INT8 ({self.mode}) vs fp32 on {self.windows} windows of {self.source}: argmax agreement "
                f"{self.agreement:.3f}, max |dp| {self.max_abs_diff:.3f}")
        if self.fp32 is None or self.int8 is None:
            return head + "; accuracy not checked (no labelled windows: give --calibration-store)"
        return (f"{head}\n  fp32: {self.fp32.line()}\n  int8: {self.int8.line()}\n  macro-F1 drop "
                f"{self.f1_drop:+.3f} (tolerance {self.max_f1_drop}; Pd and false alarms at the {self.decision})")


def structured_windows(window: int, n: int, seed: int = 0) -> np.ndarray:
    """Test windows without data: half uniform noise, half speckle-like gamma noise with a bright
    blob and its dark shadow (what an exported graph is compared on)."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 1, ((n + 1) // 2, window, window)).astype(np.float32)
    speckle = np.clip(rng.gamma(1.0, 0.2, (n // 2, window, window)), 0, 1).astype(np.float32)
    speckle[:, window // 3 : window // 2, window // 3 : window // 2] = 0.95
    speckle[:, window // 3 : window // 2, window // 2 : 3 * window // 4] = 0.02
    return np.concatenate([noise, speckle])


def _quantise_graph(fp32: Path, out: Path, mode: str, input_name: str, calibration: np.ndarray) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class WindowReader(CalibrationDataReader):  # type: ignore[misc]
        """The calibration windows, 32 at a time."""

        def __init__(self) -> None:
            self.batches = iter([{input_name: np.ascontiguousarray(calibration[i : i + 32])}
                                 for i in range(0, len(calibration), 32)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="mine_jepa_quant_") as tmp:
        prepared = Path(tmp) / "prepared.onnx"  # shapes inferred and the graph simplified, as the quantiser wants
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)  # it mistakes ONNX Attention for ORT's
        if mode == "dynamic":
            quantize_dynamic(prepared, out, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
            return
        quantize_static(prepared, out, WindowReader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul", "Gemm"])


def _set_properties(path: Path, props: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    kept = [p for p in proto.metadata_props if p.key not in props]
    del proto.metadata_props[:]
    for p in kept:
        proto.metadata_props.add(key=p.key, value=p.value)
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "mine_jepa_ros"
    onnx.save(proto, str(path))


def quantise_model(fp32: Path | str, out: Path | str, mode: str = "dynamic", windows: CheckWindows | None = None,
                   max_f1_drop: float = DEFAULT_MAX_F1_DROP, seed: int = 0) -> QuantisationReport:
    """Quantise the exported fp32 model ``fp32`` into ``out`` (atomically), or refuse."""
    src, dst = Path(fp32), Path(out)
    if mode not in MODES:
        raise UserError(f"quantisation {mode!r}: expected one of {MODES}")
    if mode == "static" and windows is None:
        raise UserError("static INT8 calibrates activations on windows: give --calibration-store")
    if windows is not None and len(windows.patches) == 0:
        raise UserError(f"{windows.source}: no windows to calibrate and check on")
    reference = OnnxClassifier(src, providers=["cpu"])
    meta = reference.metadata
    if windows is not None and windows.patches.shape[1:] != (meta.window, meta.window):
        raise UserError(f"{windows.source}: windows of {windows.patches.shape[1:]} px; the model takes {meta.window} px")
    if windows is None:
        windows = CheckWindows(structured_windows(meta.window, 256, seed), np.full(256, -1), "structured test windows")
    rng = np.random.default_rng(seed)
    calibration = windows.patches[np.sort(rng.permutation(len(windows.patches))[:CALIBRATION_WINDOWS])]
    with atomic_file(dst) as tmp:
        _quantise_graph(src, tmp, mode, reference.input_name, calibration)
        # The fp32 model's self-description, whatever the quantiser kept of it.
        _set_properties(tmp, {**model_properties(reference.session), QUANTISATION_PROP: f"int8-{mode}"})
        quantised = OnnxClassifier(tmp, providers=["cpu"])
        want, got = reference.predict(windows.patches), quantised.predict(windows.patches)
        op = meta.op(str(src))
        thresholds = None if op is None else Thresholds.of(meta.class_names, op.thresholds)
        idx = windows.labelled
        present = set(windows.labels[idx].tolist())
        checked = len(idx) > 0 and len(present) > 1
        if checked and list(windows.class_names) != list(meta.class_names):
            raise UserError(f"{windows.source}: classes {list(windows.class_names)} differ from the model's {meta.class_names}")
        report = QuantisationReport(
            mode=mode, source=windows.source, windows=len(windows.patches),
            agreement=float((want.argmax(1) == got.argmax(1)).mean()), max_abs_diff=float(np.abs(want - got).max()),
            decision="argmax" if thresholds is None else "operating point",
            fp32=WindowAccuracy.of(want[idx], windows.labels[idx], meta.class_names, thresholds) if checked else None,
            int8=WindowAccuracy.of(got[idx], windows.labels[idx], meta.class_names, thresholds) if checked else None,
            max_f1_drop=max_f1_drop)
        if not report.accepted:
            raise UserError(f"{dst}: INT8 ({mode}) macro-F1 {report.int8.macro_f1:.3f} vs fp32 {report.fp32.macro_f1:.3f} "  # type: ignore[union-attr]
                            f"on {windows.source} drops {report.f1_drop:.3f} > {max_f1_drop}; not written "
                            "(try the other --quantisation mode, or keep the fp32 model)")
        _set_properties(tmp, {CHECK_PROP: json.dumps(report.to_dict(), default=str)})
        OnnxClassifier(tmp, providers=["cpu"])  # what is kept still loads, metadata and all
    return report
