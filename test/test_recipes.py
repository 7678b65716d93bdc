"""Training recipes: every shipped recipe loads; a bad key stops with one line naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from mine_jepa_ros.cli import main
from mine_jepa_ros.errors import RecipeError
from mine_jepa_ros.training.recipes import (
    ExperimentRecipe,
    RealEvalRecipe,
    experiment_recipe,
    find_recipe,
    load_recipe,
    real_eval_recipe,
    scale_names,
)

ROOT = Path(__file__).resolve().parents[1]


def test_every_shipped_recipe_loads_into_its_record() -> None:
    assert scale_names() == ["cpu", "paper", "paper-short", "smoke"]
    assert scale_names("real-eval-") == ["cpu", "smoke"]
    for name in scale_names():
        recipe = experiment_recipe(name)
        assert isinstance(recipe, ExperimentRecipe) and recipe.description
    for name in scale_names("real-eval-"):
        assert isinstance(real_eval_recipe(name), RealEvalRecipe)
    paper = experiment_recipe("paper")
    assert (paper.pretrain.arch, paper.pretrain.init, paper.pretrain.batch_size, paper.pretrain.views) == ("vit_small", "timm", 1024, 4)
    assert paper.pretrain.lr == pytest.approx(1.4e-3) and paper.pretrain.epochs == 100
    short = experiment_recipe("paper-short")  # scripts/gpu_figures.sh: no hub on the GPU machine, so random init
    assert (short.pretrain.arch, short.pretrain.init, short.pretrain.views) == ("vit_small", "random", 4)
    assert short.detection.test_surveys * short.sim.objects_per_class >= 150  # at least 150 MILCO can be tested
    assert find_recipe("cpu.yaml") == ROOT / "training" / "cpu.yaml"  # the checkout's own recipes first


@pytest.mark.parametrize(("text", "message"), [
    ("sim: {surveys: 2}\npretrain: {epochs: 1, bogus: 3}\nprobe_epochs: 1\nfinetune_epochs: 1\n",
     "pretrain.bogus: unknown key"),
    ("sim: {surveys: two}\npretrain: {}\nprobe_epochs: 1\nfinetune_epochs: 1\n", "sim.surveys: expected int, got 'two'"),
    ("sim: {}\npretrain: {lr: 1e-3}\nprobe_epochs: 1\nfinetune_epochs: 1\n", "pretrain.lr: expected float, got '1e-3'"),
    ("sim: {}\npretrain: {}\nfinetune_epochs: 1\n", "probe_epochs: required key missing"),
    ("sim: {}\npretrain: {views: 1}\nprobe_epochs: 1\nfinetune_epochs: 1\n", "pretrain: views must be >= 2"),
    ("- just\n- a list\n", "top level: expected a mapping"),
    ("sim: [unclosed\n", "not valid YAML"),
])
def test_bad_recipes_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace("[", r"\[")) as info:
        load_recipe(path, ExperimentRecipe)
    assert str(path) in str(info.value)


def test_a_valid_partial_recipe_takes_the_records_defaults(tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text("sim: {surveys: 2, altitude_m: 2}\npretrain: {epochs: 1, proj_dim: null}\nprobe_epochs: 3\nfinetune_epochs: 1\n")
    recipe = load_recipe(path, ExperimentRecipe)
    assert recipe.sim.surveys == 2 and recipe.sim.altitude_m == 2.0 and isinstance(recipe.sim.altitude_m, float)
    assert recipe.pretrain.proj_dim is None and recipe.test_fraction == 0.25


def test_experiment_cli_reports_a_bad_recipe_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("sim: {}\npretrain: {epochs: 1, bogus: 3}\nprobe_epochs: 1\nfinetune_epochs: 1\n")
    assert main(["experiment", "--recipe", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mine.yaml: pretrain.bogus: unknown key" in err
    assert main(["experiment", "--scale", "huge", "--out", str(tmp_path / "out")]) == 2
    assert "huge.yaml: no such recipe" in capsys.readouterr().err
    assert main(["--debug", "experiment", "--scale", "huge", "--out", str(tmp_path / "out")]) == 2
    assert "Traceback" in capsys.readouterr().err  # --debug shows it
