"""The package's layout is its architecture: layers import downwards only, torch stays where a model
runs, nothing generic is installed at top level, and the docs the code cites are in the repository."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mine_jepa_ros"

# Rank of each part of the package: a module may import from lower ranks and from its own part only
# (parts of the same rank are peers and must not import each other).
LAYERS: dict[str, int] = {
    "errors": 0, "atomic": 0, "geometry": 0, "input_types": 0,
    "io": 1, "interfaces": 1,
    "geo": 2, "detect": 2,
    "sim": 3, "evaluate": 3, "ros": 3,
    "training": 4, "deploy": 4,
    "tools": 5,
    "cli": 6,
}


def _part(module: str) -> str:
    """``mine_jepa_ros.detect.pipeline`` -> ``detect``."""
    return module.split(".")[1]


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path) -> set[str]:
    """Every ``mine_jepa_ros.*`` module named by an import anywhere in the file (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mine_jepa_ros."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("mine_jepa_ros."))
    return found


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {_part(m) for m in _modules() if m.count(".") >= 1}
    assert parts == set(LAYERS), f"unranked: {parts - set(LAYERS)}; gone: {set(LAYERS) - parts}"


def test_no_layer_imports_a_higher_one_or_a_peer() -> None:
    wrong = []
    for module, path in _modules().items():
        if module == "mine_jepa_ros":
            continue
        mine = _part(module)
        for imported in _imports(path):
            theirs = _part(imported)
            if theirs != mine and LAYERS[theirs] >= LAYERS[mine]:
                wrong.append(f"{module} ({mine}, rank {LAYERS[mine]}) imports {imported} ({theirs}, rank {LAYERS[theirs]})")
    assert not wrong, "\n".join(wrong)


def test_the_layer_check_catches_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from mine_jepa_ros.cli.main import main\n")
    assert _imports(bad) == {"mine_jepa_ros.cli.main"}


def _fresh_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


TORCH_FREE = [
    "mine_jepa_ros.errors", "mine_jepa_ros.geometry", "mine_jepa_ros.io.bag", "mine_jepa_ros.io.xtf",
    "mine_jepa_ros.io.detections", "mine_jepa_ros.io.image_codec", "mine_jepa_ros.sim.bag",
    "mine_jepa_ros.detect.tiling", "mine_jepa_ros.detect.merging", "mine_jepa_ros.detect.pipeline",
    "mine_jepa_ros.evaluate.scoring", "mine_jepa_ros.detect.operating_point", "mine_jepa_ros.detect.metadata",
    "mine_jepa_ros.detect.backends", "mine_jepa_ros.detect.onnx_backend", "mine_jepa_ros.deploy.quantise",
    "mine_jepa_ros.evaluate.replay", "mine_jepa_ros.geo.tracking", "mine_jepa_ros.tools.backend_bench",
    "mine_jepa_ros.evaluate.folder_replay", "mine_jepa_ros.io.recording", "mine_jepa_ros.io.image_folders",
    "mine_jepa_ros.input_types", "mine_jepa_ros.io.waterfall_tiles",
    "mine_jepa_ros.ros.params",
    "mine_jepa_ros.ros.worker", "mine_jepa_ros.geo.navigation", "mine_jepa_ros.geo.contacts",
    "mine_jepa_ros.geo.formats",
    "mine_jepa_ros.training.recipes", "mine_jepa_ros.cli",
]


def test_modules_that_run_no_model_do_not_import_torch(tmp_path: Path) -> None:
    code = "import sys\n" + "".join(f"import {m}\n" for m in TORCH_FREE) + \
        "assert 'torch' not in sys.modules, 'torch imported'\nprint('ok')"
    result = _fresh_python(code, tmp_path)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_simulate_and_import_xtf_run_without_torch(tmp_path: Path) -> None:
    xtf = ROOT.parent / "shared" / "data" / "xtf" / "scotsman-iver2.xtf"
    imports = (f"main(['import-xtf', {str(xtf)!r}, '--out', 'xtf_bag'])\n" if xtf.is_file() else
               "open('bad.xtf', 'wb').write(b'not xtf'); assert main(['import-xtf', 'bad.xtf', '--out', 'b']) == 2\n")
    code = ("import sys\nfrom mine_jepa_ros.cli import main\n"
            "assert main(['simulate', '--out', 'bag', '--pings', '200', '--samples-per-side', '128', '--max-range', '8']) == 0\n"
            + imports + "assert 'torch' not in sys.modules, 'torch imported'\nprint('ok')")
    result = _fresh_python(code, tmp_path)
    assert result.returncode == 0 and "ok" in result.stdout, result.stdout + result.stderr


def test_nothing_named_training_is_importable_from_elsewhere(tmp_path: Path) -> None:
    result = _fresh_python("import training", tmp_path)
    assert result.returncode != 0 and "No module named 'training'" in result.stderr
    assert _fresh_python("import mine_jepa_ros.training.pretrain", tmp_path).returncode == 0


def test_the_command_line_is_a_package_of_small_modules() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in (PACKAGE / "cli").glob("*.py")}
    assert len(sizes) >= 5 and max(sizes.values()) <= 300, sizes


def test_docstrings_cite_only_documents_in_the_repository() -> None:
    assert (ROOT / "docs" / "design.md").is_file()
    assert "docs/design.md" in (ROOT / "README.md").read_text()
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert "DESIGN §" not in text and "DESIGN.md" not in text, path


def test_write_then_rename_lives_in_one_helper() -> None:
    """Files are written atomically through mine_jepa_ros.atomic only (bags and patch stores are
    folders, renamed as a whole by their writers)."""
    allowed = {"atomic.py", "bag.py", "patches.py"}
    for path in PACKAGE.rglob("*.py"):
        if path.name not in allowed:
            text = path.read_text()
            assert ".partial" not in text and "os.replace(" not in text, path


@pytest.mark.slow
def test_the_wheel_installs_one_package_and_the_recipes(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    wheel = next(tmp_path.glob("mine_jepa_ros-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"mine_jepa_ros"}, top
    packaged = {str(Path(n).parent) for n in names if n.endswith(".py")}
    on_disk = {str(p.parent.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")}
    assert on_disk <= packaged, f"not in the wheel: {on_disk - packaged}"
    shared = {n.split("/data/", 1)[1] for n in names if ".data/data/" in n}
    for recipe in ("smoke", "cpu", "paper", "real-eval-smoke", "real-eval-cpu"):
        assert f"share/mine_jepa_ros/training/{recipe}.yaml" in shared
    assert {"share/mine_jepa_ros/launch/mine_jepa.launch.py", "share/mine_jepa_ros/config/mine_jepa.yaml"} <= shared
