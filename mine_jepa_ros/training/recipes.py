"""Experiment recipes: one YAML file per scale, read as typed records (torch-free).

``mine-jepa experiment --scale NAME`` reads ``NAME.yaml`` and ``mine-jepa real-eval --scale NAME``
reads ``real-eval-NAME.yaml`` from the recipe folder (the repository's ``training/``, installed as
``share/mine_jepa_ros/training``); ``--recipe FILE`` reads a user's own copy. Every key is checked
against the record it fills: an unknown key, a missing required key or a value of the wrong type
raises :class:`~mine_jepa_ros.errors.RecipeError` naming the file and the key (``pretrain.lr``).
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mine_jepa_ros.errors import RecipeError
from mine_jepa_ros.training.config import PeerConfig, PretrainConfig
from mine_jepa_ros.training.extract import SimExtractConfig

PACKAGE = "mine_jepa_ros"
T = TypeVar("T")


@dataclass(frozen=True)
class DetectionEval:
    """The detector-level test of each fine-tuned model: operating point (best F1) chosen on
    validation surveys, Pd and false alarms per km² on test surveys, both simulated like the store's
    but never the same surveys."""

    validation_surveys: int = 2
    test_surveys: int = 3
    froc_max_fa_per_km2: float = 500.0  # the false-alarm range of the FROC area reported


@dataclass(frozen=True)
class ExperimentRecipe:
    """``mine-jepa experiment``: simulated store, pretraining of every row, the two probes."""

    sim: SimExtractConfig
    pretrain: PretrainConfig
    probe_epochs: int
    finetune_epochs: int
    finetune_lr: float = 1e-3
    test_fraction: float = 0.25  # share of the surveys held out (labelled test patches come only from them)
    detection: DetectionEval = field(default_factory=DetectionEval)
    peer: PeerConfig = field(default_factory=PeerConfig)  # the supervised peer row (a torchvision detector)
    description: str = field(default="", compare=False)


@dataclass(frozen=True)
class RealEvalRecipe:
    """``mine-jepa real-eval``: the SIGReg pretraining budget, the synthetic store, the linear probe."""

    pretrain: PretrainConfig
    sim: SimExtractConfig
    probe_epochs: int = 200
    description: str = field(default="", compare=False)


def recipe_dirs() -> list[Path]:
    """Where recipes are looked up, first match wins: the source checkout this package runs from,
    the ament share folder (colcon install), then ``sys.prefix/share`` (pip install)."""
    dirs = []
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "package.xml").is_file() and f"<name>{PACKAGE}</name>" in (checkout / "package.xml").read_text():
        dirs.append(checkout / "training")
    try:
        from ament_index_python.packages import get_package_share_directory

        dirs.append(Path(get_package_share_directory(PACKAGE)) / "training")
    except (ImportError, KeyError, LookupError, OSError, ValueError):
        pass
    dirs.append(Path(sys.prefix) / "share" / PACKAGE / "training")
    return dirs


def find_recipe(file_name: str) -> Path:
    for folder in recipe_dirs():
        if (folder / file_name).is_file():
            return folder / file_name
    looked = ", ".join(str(d) for d in recipe_dirs())
    prefix = "real-eval-" if file_name.startswith("real-eval-") else ""
    raise RecipeError(f"{file_name}: no such recipe (looked in {looked}; scales there: {', '.join(scale_names(prefix))}); "
                      "pass --recipe FILE for your own")


def scale_names(prefix: str = "") -> list[str]:
    """The scales that have a recipe file (``prefix`` = ``"real-eval-"`` for the real-data ones)."""
    names: set[str] = set()
    for folder in recipe_dirs():
        for path in folder.glob(f"{prefix}*.yaml"):
            rest = path.stem[len(prefix):]
            if prefix or not rest.startswith("real-eval-"):
                names.add(rest)
    return sorted(names)


def load_recipe(path: Path, cls: type[T]) -> T:
    """Read ``path`` into a ``cls`` record, checking every key and type."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read the recipe ({exc})") from exc
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML ({exc})") from exc
    record = _build(cls, data, path, "")
    if isinstance(record, ExperimentRecipe | RealEvalRecipe):
        try:
            record.pretrain.validate()
        except Exception as exc:
            raise RecipeError(f"{path}: pretrain: {exc}") from exc
    return record


def experiment_recipe(scale: str, recipe: Path | None = None) -> ExperimentRecipe:
    return load_recipe(recipe or find_recipe(f"{scale}.yaml"), ExperimentRecipe)


def real_eval_recipe(scale: str, recipe: Path | None = None) -> RealEvalRecipe:
    return load_recipe(recipe or find_recipe(f"real-eval-{scale}.yaml"), RealEvalRecipe)


def _build(cls: type[T], data: Any, path: Path, where: str) -> T:
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: {where or 'top level'}: expected a mapping of keys, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise RecipeError(f"{path}: {where}{unknown[0]}: unknown key; expected one of {sorted(known)}")
    values = {}
    for name, f in known.items():
        key = f"{where}{name}"
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RecipeError(f"{path}: {key}: required key missing")
            continue
        values[name] = _value(hints[name], data[name], path, key)
    return cls(**values)


def _value(hint: Any, value: Any, path: Path, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path, f"{key}.")  # type: ignore[arg-type]
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is not type(None):
                return _value(option, value, path, key)
    if origin is tuple:
        items = typing.get_args(hint)
        if not isinstance(value, list | tuple) or len(value) != len(items):
            raise RecipeError(f"{path}: {key}: expected a list of {len(items)} values, got {value!r}")
        return tuple(_value(t, v, path, f"{key}[{i}]") for i, (t, v) in enumerate(zip(items, value)))
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and type(value) is hint:
        return value
    raise RecipeError(f"{path}: {key}: expected {getattr(hint, '__name__', hint)}, got {value!r}")
