"""Parallel extraction into shards: `extract --workers 2` gives one worker's patches (bags, YOLO
image folders, image + mask folders), a bad file is skipped by name without losing the others, and
pretraining and probing read the shards as one store."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mine_jepa_ros.cli import main
from mine_jepa_ros.errors import StoreError
from mine_jepa_ros.sim.bag import SurveyBagOptions, write_survey_bag
from mine_jepa_ros.sim.survey import SurveyConfig, simulate_survey
from mine_jepa_ros.training.extract import consecutive_chunks
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


def assert_same_store(one: PatchStore, sharded: PatchStore) -> None:
    """The same patches, labels, groups, splits and source statistics, in the same order."""
    assert len(sharded) == len(one)
    np.testing.assert_array_equal(sharded.patches[np.arange(len(one))], np.asarray(one.patches))
    for key in ("labels", "splits"):
        np.testing.assert_array_equal(sharded.arrays[key], one.arrays[key])
    assert [sharded.meta["groups"][g] for g in sharded.arrays["groups"]] == [one.meta["groups"][g] for g in one.arrays["groups"]]
    (a,), (b,) = one.sources, sharded.sources
    assert (a["name"], a["pixels"]) == (b["name"], b["pixels"])
    assert a["mean"] == pytest.approx(b["mean"], abs=1e-9) and a["std"] == pytest.approx(b["std"], abs=1e-9)


def test_two_workers_give_the_patches_of_one(stores: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    one, sharded = PatchStore(stores["one"]), open_store(stores["shards"])
    assert isinstance(sharded, ShardedPatchStore) and len(sharded.shards) == 4  # one per readable bag
    assert len(one) > 50 and set(one.labels.tolist()) >= {0, 1, 2} and len(set(one.arrays["splits"].tolist())) == 2
    assert_same_store(one, sharded)


def test_a_bad_file_is_skipped_by_name_and_the_others_kept(bags: list[Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["extract", *[a for b in bags for a in ("--bag", str(b))], "--out", str(tmp_path / "s"), "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert f"{bags[2]}: skipped:" in out and "skipped 1 of 5 file(s)" in out
    assert len(open_store(tmp_path / "s").shards) == 4  # type: ignore[attr-defined]
    assert main(["extract", "--bag", str(bags[2]), "--out", str(tmp_path / "none"), "--workers", "2"]) == 2
    assert not (tmp_path / "none").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def image_folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten simulated waterfalls as a YOLO folder (``yolo/``) and as an SDVDs folder (``sdvd/images``,
    ``sdvd/masks``), each with one broken file: an image OpenCV cannot read, a bad label line."""
    root = tmp_path_factory.mktemp("images")
    yolo, images, masks = root / "yolo", root / "sdvd" / "images", root / "sdvd" / "masks"
    for folder in (yolo, images, masks):
        folder.mkdir(parents=True)
    for k in range(10):
        survey = simulate_survey(SurveyConfig(pings=256, samples_per_side=128, max_range_m=10.0, altitude_m=2.0,
                                              milco_count=1, nombo_count=1, object_ground_range_m=(3.0, 7.0), seed=60 + k))
        image = survey.to_uint8()
        h, w = image.shape
        name = f"{k:04d}_{2010 + k}"
        cv2.imwrite(str(yolo / f"{name}.png"), image)
        cv2.imwrite(str(images / f"{name}.png"), image)
        mask = np.zeros_like(image)
        lines = []
        for obj in survey.objects:
            r0, c0, r1, c1 = (int(round(v)) for v in obj.box)
            mask[r0:r1, c0:c1] = 255
            lines.append(f"{0 if obj.class_name == 'MILCO' else 1} {(c0 + c1) / 2 / w:.6f} {(r0 + r1) / 2 / h:.6f} "
                         f"{(c1 - c0) / w:.6f} {(r1 - r0) / h:.6f}")
        cv2.imwrite(str(masks / f"{name}.png"), mask)
        (yolo / f"{name}.txt").write_text("\n".join(lines) + "\n")
    (yolo / "0003_2013.txt").write_text("0 0.5 0.5 0.1\n")  # four numbers: a bad label line
    for folder in (yolo, images, masks):
        (folder / "0004_2014.png").write_bytes(b"\x89PNG truncated")
    return root


@pytest.mark.parametrize("kind", ["yolo", "masks"])
def test_image_folders_with_two_workers_give_the_patches_of_one(image_folders: Path, kind: str, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    source = ["--yolo", str(image_folders / "yolo")] if kind == "yolo" else ["--masks", str(image_folders / "sdvd")]
    for workers in (1, 2):
        assert main(["extract", *source, "--out", str(tmp_path / f"w{workers}"), "--test-fraction", "0.34",
                     "--workers", str(workers)]) == 0
        out = capsys.readouterr().out
        broken = ["0004_2014.png", *(["0003_2013.png"] if kind == "yolo" else [])]
        assert f"skipped {len(broken)} of 10 file(s)" in out, out
        for name in broken:
            assert f"{name}: skipped:" in out
        if kind == "yolo":
            assert "0003_2013.txt:1: expected 'class cx cy w h'" in out
    one, sharded = PatchStore(tmp_path / "w1"), open_store(tmp_path / "w2")
    assert len(one.meta["groups"]) == 10 - len(broken)
    # 10 files in 8 runs (4 per worker) [0] [1] [2 3] [4] [5] [6 7] [8] [9]; [4] is all broken
    assert isinstance(sharded, ShardedPatchStore) and len(sharded.shards) == 7
    assert [len(shard.meta["groups"]) for shard in sharded.shards] == [1, 1, 1 if kind == "yolo" else 2, 1, 2, 1, 1]
    assert {0, 1} <= set(one.labels.tolist()) and len(set(one.arrays["splits"].tolist())) == 2
    assert_same_store(one, sharded)


def test_consecutive_chunks_keep_the_order_and_balance_the_sizes() -> None:
    assert consecutive_chunks(list(range(10)), 8) == [[0], [1], [2, 3], [4], [5], [6, 7], [8], [9]]
    assert consecutive_chunks(list(range(3)), 3) == [[0], [1], [2]]
    assert consecutive_chunks(list(range(9)), 2) == [[0, 1, 2, 3], [4, 5, 6, 7, 8]]


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


def test_the_simulator_runs_in_one_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["extract", "--sim", "2", "--out", str(tmp_path / "s"), "--workers", "2"]) == 2
    assert "--sim runs in one process" in capsys.readouterr().err and not (tmp_path / "s").exists()
