"""Parallel extraction into shards: `extract --workers 2` gives one worker's patches, a bad file is
skipped by name without losing the others, and pretraining and probing read the shards as one store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mine_jepa_ros.cli import main
from mine_jepa_ros.errors import StoreError
from mine_jepa_ros.sim.bag import SurveyBagOptions, write_survey_bag
from mine_jepa_ros.sim.survey import SurveyConfig, simulate_survey
from mine_jepa_ros.training.patches import PatchBatch, PatchStore, PatchStoreWriter, ShardedPatchStore, open_store
from mine_jepa_ros.training.pretrain import PatchSampler
from mine_jepa_ros.training.probe import ProbeConfig, train_probe

pytestmark = pytest.mark.slow  # simulates surveys and starts worker processes


@pytest.fixture(scope="module")
def bags(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("bags")
    out = []
    for k in range(4):
        survey = simulate_survey(SurveyConfig(pings=320, samples_per_side=160, max_range_m=10.0, altitude_m=2.0,
                                              milco_count=2, nombo_count=1, object_ground_range_m=(3.0, 7.0), seed=40 + k))
        out.append(write_survey_bag(survey, root / f"survey_{k}", SurveyBagOptions(frame_height=160)))
    broken = root / "broken_bag"
    broken.mkdir()
    (broken / "metadata.yaml").write_text("not: [a rosbag2")
    return [*out[:2], broken, *out[2:]]


@pytest.fixture(scope="module")
def stores(bags: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stores")
    for workers in (1, 2):
        args = ["extract", *[a for b in bags for a in ("--bag", str(b))], "--out", str(root / f"w{workers}"),
                "--test-fraction", "0.25", "--workers", str(workers)]
        assert main(args) == 0
    return {"one": root / "w1", "shards": root / "w2"}


def test_two_workers_give_the_patches_of_one(stores: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    one, sharded = PatchStore(stores["one"]), open_store(stores["shards"])
    assert isinstance(sharded, ShardedPatchStore) and len(sharded.shards) == 4  # one per readable bag
    assert len(sharded) == len(one) > 50
    np.testing.assert_array_equal(sharded.patches[np.arange(len(one))], np.asarray(one.patches))
    for key in ("labels", "splits"):
        np.testing.assert_array_equal(sharded.arrays[key], one.arrays[key])
    assert [sharded.meta["groups"][g] for g in sharded.arrays["groups"]] == [one.meta["groups"][g] for g in one.arrays["groups"]]
    assert set(one.labels.tolist()) >= {0, 1, 2} and len(set(one.arrays["splits"].tolist())) == 2
    (a,), (b,) = one.sources, sharded.sources
    assert (a["name"], a["pixels"]) == (b["name"], b["pixels"])
    assert a["mean"] == pytest.approx(b["mean"], abs=1e-9) and a["std"] == pytest.approx(b["std"], abs=1e-9)


def test_a_bad_file_is_skipped_by_name_and_the_others_kept(bags: list[Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["extract", *[a for b in bags for a in ("--bag", str(b))], "--out", str(tmp_path / "s"), "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert f"{bags[2]}: skipped:" in out and "skipped 1 of 5 file(s)" in out
    assert len(open_store(tmp_path / "s").shards) == 4  # type: ignore[attr-defined]
    assert main(["extract", "--bag", str(bags[2]), "--out", str(tmp_path / "none"), "--workers", "2"]) == 2
    assert not (tmp_path / "none").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_pretraining_and_probing_read_the_shards_as_one_store(stores: dict[str, Path]) -> None:
    one, sharded = PatchStore(stores["one"]), open_store(stores["shards"])
    flat = np.random.default_rng(0).permutation(PatchSampler([one]).total)[:24]
    for x, y in zip(PatchSampler([one]).load(flat), PatchSampler([sharded]).load(flat)):
        np.testing.assert_array_equal(x, y)
    cfg = ProbeConfig(mode="linear", epochs=2, batch_size=32, device="cpu", precision="fp32")
    heads = [train_probe(store, cfg, progress=False).head.state_dict() for store in (one, sharded)]
    for key in heads[0]:
        torch.testing.assert_close(heads[0][key], heads[1][key])


def test_shards_of_different_windows_or_classes_are_refused(tmp_path: Path) -> None:
    for name, window in (("a", 32), ("b", 48)):
        writer = PatchStoreWriter(window=window)
        writer.add(PatchBatch(np.zeros((2, window, window), np.uint8), np.zeros(2, np.int16), "g"))
        writer.write(tmp_path / "shards" / name)
    with pytest.raises(StoreError, match="48px windows"):
        open_store(tmp_path / "shards")
    with pytest.raises(StoreError, match="not a patch store or a directory of shards"):
        open_store(tmp_path)
