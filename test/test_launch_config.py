"""README, config/mine_jepa.yaml, launch files and the node's parameter table must agree.

`launch` is not on PyPI, so the launch files are read as source (ast), not executed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from mine_jepa_ros.errors import ParameterError
from mine_jepa_ros.ros.params import PARAMS, PARAMS_BY_NAME, NodeSettings

ROOT = Path(__file__).resolve().parents[1]


def _yaml_params() -> dict[str, object]:
    return yaml.safe_load((ROOT / "config" / "mine_jepa.yaml").read_text())["mine_jepa_node"]["ros__parameters"]


def _launch_arguments(path: Path) -> tuple[str, ...]:
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "LAUNCH_ARGUMENTS" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise AssertionError(f"{path} has no LAUNCH_ARGUMENTS")


def test_yaml_holds_every_parameter_with_its_default() -> None:
    params = _yaml_params()
    assert list(params) == [p.name for p in PARAMS]
    for name, value in params.items():
        default = PARAMS_BY_NAME[name].default
        assert value == default and type(value) is type(default), name


def test_yaml_comments_every_parameter() -> None:
    lines = (ROOT / "config" / "mine_jepa.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("    ") and not line.strip().startswith("#") and ":" in line:
            assert lines[i - 1].strip().startswith("#"), f"no comment above {line.strip()}"


def test_launch_arguments_are_yaml_parameters() -> None:
    params = _yaml_params()
    main = _launch_arguments(ROOT / "launch" / "mine_jepa.launch.py")
    assert set(main) <= set(params)
    assert {"model_path", "device", "input_topic", "input_mode", "batch_size", "thresholds"} <= set(main)
    source = (ROOT / "launch" / "mine_jepa.launch.py").read_text()
    assert "config\", \"mine_jepa.yaml\"" in source  # defaults are read from the YAML at launch time
    replay = _launch_arguments(ROOT / "launch" / "replay.launch.py")
    assert {"bag", "model_path"} <= set(replay)


def test_readme_documents_every_parameter_with_its_default() -> None:
    readme = (ROOT / "README.md").read_text()
    for p in PARAMS:
        assert f"`{p.name}`" in readme, p.name
        assert f"| `{p.name}` | `{p.default!r}`".replace("'", "") in readme.replace("'", ""), p.name


def test_setup_installs_launch_and_config() -> None:
    setup = (ROOT / "setup.py").read_text()
    assert "launch/*.launch.py" in setup and "config/*.yaml" in setup and "resource/" in setup
    package_xml = (ROOT / "package.xml").read_text()
    assert "<build_type>ament_python</build_type>" in package_xml
    assert "<buildtool_depend>ament_python</buildtool_depend>" not in package_xml


def test_settings_require_a_model_and_name_bad_values() -> None:
    import pytest

    with pytest.raises(ParameterError, match="model_path"):
        NodeSettings.from_values({})
    with pytest.raises(ParameterError, match="^batch_size"):
        NodeSettings.from_values({"model_path": "m", "batch_size": 0})
    with pytest.raises(ParameterError, match="^input_mode"):
        NodeSettings.from_values({"model_path": "m", "input_mode": "video"})
    with pytest.raises(ParameterError, match="^device"):
        NodeSettings.from_values({"model_path": "m", "device": "gpu"})
    assert NodeSettings.from_values({"model_path": "m", "slant_resolution_m": 0.03, "altitude_m": 4.0, "ping_spacing_m": 0.05}).geometry()
