"""``mine-jepa extract``: patch stores from rosbag2 recordings, YOLO image folders or the simulator.

* Bags (and XTF recordings, imported first): every sliding window (stride 64) of every image is an
  unlabelled patch; with a ground-truth topic, windows get the scoring module's window labels (class
  of the object whose box centre they hold, background when they touch no box, unlabelled
  otherwise). Group = file. ``workers`` > 1 processes the files in parallel processes into shards.
* YOLO folders (the Santos et al. layout, ``NNNN_YYYY.jpg`` + ``NNNN_YYYY.txt`` with
  ``class cx cy w h`` normalised, class 0 = MILCO, 1 = NOMBO, empty = background): a crop centred
  on each object, background crops from windows that overlap no object, and every sliding window as
  unlabelled data. Group = image; ``--test-years`` puts whole years into the test split.
* Simulator: surveys (one group each) with object-centred crops, background crops and all windows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from mine_jepa_ros.detect.scoring import window_truth
from mine_jepa_ros.detect.tiling import WaterfallTiler
from mine_jepa_ros.errors import MineJepaError, UserError
from mine_jepa_ros.io.bag import DETECTION_TYPE, ReadStats, iter_images, list_topics, read_detections
from mine_jepa_ros.io.detections import Detection
from mine_jepa_ros.io.messages import stamp_ns
from mine_jepa_ros.sim.survey import FleetVariation, Survey, SurveyConfig, simulate_survey
from mine_jepa_ros.training.patches import (
    BACKGROUND_POOL,
    DEFAULT_CLASSES,
    UNLABELLED,
    PatchBatch,
    PatchStore,
    PatchStoreWriter,
    assign_splits,
    open_store,
    sharded_store_dir,
)

YOLO_CLASSES = {0: "MILCO", 1: "NOMBO"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def _to_u8(pixels: np.ndarray) -> np.ndarray:
    return (np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def centred_crop(image: np.ndarray, row: float, col: float, window: int) -> np.ndarray:
    """``window`` x ``window`` crop centred on (row, col); the image is reflected at its borders."""
    half = window // 2
    padded = np.pad(image, half, mode="reflect") if min(image.shape) > half else np.pad(image, half, mode="edge")
    r, c = int(round(row)) + half, int(round(col)) + half
    return np.ascontiguousarray(padded[r - half : r - half + window, c - half : c - half + window])


def labelled_patches(image_u8: np.ndarray, objects: list[Detection], window: int, stride: int,
                     rng: np.random.Generator, background_per_object: float = 1.0, min_background: int = 2,
                     offset_crops: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Object-centred crops (their class) + background crops from windows touching no object.

    ``offset_crops`` adds that many crops per object with its centre moved up to ``stride / 2``
    pixels each way: where a sliding window at ``stride`` sees it in deployment."""
    crops, labels = [], []
    for obj in objects:
        if obj.class_name not in DEFAULT_CLASSES:
            continue
        row, col = obj.centre
        shifts = [(0.0, 0.0), *rng.uniform(-stride / 2, stride / 2, size=(offset_crops, 2))]
        for dr, dc in shifts:
            crops.append(centred_crop(image_u8, row + dr, col + dc, window))
            labels.append(DEFAULT_CLASSES.index(obj.class_name))
    tiles = WaterfallTiler(window, stride).tile(image_u8)
    truth = window_truth(tiles.positions, window, objects, list(DEFAULT_CLASSES))
    clean = np.nonzero(truth == 0)[0]
    n_bg = min(len(clean), max(min_background, int(round(background_per_object * len(crops)))))
    for i in rng.choice(clean, size=n_bg, replace=False) if n_bg else []:
        crops.append(tiles.patches[i])
        labels.append(0)
    if not crops:
        return np.zeros((0, window, window), np.uint8), np.zeros(0, np.int16)
    return np.stack(crops).astype(np.uint8), np.array(labels, np.int16)


def unlabelled_windows(image_u8: np.ndarray, window: int, stride: int,
                       objects: list[Detection] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every sliding window, labelled :data:`BACKGROUND_POOL` where ``objects`` (the ground truth,
    when known) shows it touches none, else unlabelled."""
    tiles = WaterfallTiler(window, stride).tile(image_u8)
    labels = np.full(len(tiles), UNLABELLED, np.int16)
    if objects is not None:
        labels[window_truth(tiles.positions, window, objects, list(DEFAULT_CLASSES)) == 0] = BACKGROUND_POOL
    return tiles.patches, labels


# -- simulator ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimExtractConfig:
    surveys: int = 8
    pings: int = 1024
    samples_per_side: int = 512
    max_range_m: float = 20.0
    altitude_m: float = 3.0
    objects_per_class: int = 5
    seed: int = 0
    vary: bool = False  # each survey its own sonar setting and seabed (FleetVariation), as a real fleet's
    offset_crops: int = 0  # extra crops per object, off-centre as a sliding window sees it


def survey_config(cfg: SimExtractConfig, seed: int) -> SurveyConfig:
    """The configuration of the simulated survey with this seed (varied when ``cfg.vary``)."""
    base = SurveyConfig(pings=cfg.pings, samples_per_side=cfg.samples_per_side, max_range_m=cfg.max_range_m,
                        altitude_m=cfg.altitude_m, milco_count=cfg.objects_per_class, nombo_count=cfg.objects_per_class,
                        object_ground_range_m=(3.0, cfg.max_range_m * 0.75), object_min_spacing_m=5.0, seed=seed)
    return FleetVariation().draw(base, seed) if cfg.vary else base


def simulated_surveys(cfg: SimExtractConfig) -> Iterator[tuple[str, Survey]]:
    for k in range(cfg.surveys):
        yield f"sim-{cfg.seed}-{k:03d}", simulate_survey(survey_config(cfg, cfg.seed * 1000 + k))


def extract_simulator(out: Path, cfg: SimExtractConfig, window: int = 96, stride: int = 64, test_fraction: float = 0.25,
                      unlabelled: bool = True, progress: bool = True) -> PatchStore:
    writer = PatchStoreWriter(window=window, source_kinds={"syn": "syn"},
                              provenance={"from": "simulator", "config": cfg.__dict__, "stride": stride,
                                          "test_fraction": test_fraction})
    rng = np.random.default_rng(cfg.seed)
    for group, survey in tqdm(simulated_surveys(cfg), total=cfg.surveys, desc="simulate", disable=not progress):
        image = survey.to_uint8()
        crops, labels = labelled_patches(image, survey.ground_truth(), window, stride, rng, offset_crops=cfg.offset_crops)
        writer.add(PatchBatch(crops, labels, group, "syn"))
        if unlabelled:
            windows, pool = unlabelled_windows(image, window, stride, survey.ground_truth())
            writer.add(PatchBatch(windows, pool, group, "syn"))
    return writer.write(out, test_fraction=test_fraction, seed=cfg.seed)


# -- rosbag2 --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BagJob:
    """One input file of a bag extraction: a rosbag2, or an XTF recording imported first."""

    path: Path
    topic: str | None
    gt_topic: str | None
    window: int
    stride: int
    source: str
    xtf: bool = False

    @property
    def group(self) -> str:
        return self.path.name


def bag_batches(job: BagJob, progress: bool = False) -> tuple[list[PatchBatch], str]:
    """Sliding windows of every image of one bag (one group), labelled where ground truth exists,
    and a note on what was skipped ("" when nothing)."""
    if job.xtf:
        import tempfile

        from mine_jepa_ros.io.xtf import import_xtf

        with tempfile.TemporaryDirectory(prefix="mine_jepa_xtf_") as tmp:
            bag = Path(tmp) / job.path.stem
            info = import_xtf(job.path, bag, mode="frames", encoding="mono8", frame_height=1 << 20)
            batches, note = bag_batches(BagJob(bag, None, None, job.window, job.stride, job.source), progress)
            return [PatchBatch(b.patches, b.labels, job.group, b.source) for b in batches], \
                "; ".join(x for x in (f"{info['pings']} pings, {info['skip_summary']}", note) if x)
    topics = list_topics(job.path)
    gt = job.gt_topic
    if gt is None:
        found = [t for t, m in topics.items() if m == DETECTION_TYPE]
        gt = found[0] if len(found) == 1 else None
    truth: dict[int, list[Detection]] = {}
    if gt:
        for stamp, dets in read_detections(job.path, gt):
            truth.setdefault(stamp, []).extend(dets)
    stats = ReadStats()
    batches = []
    for rec in tqdm(iter_images(job.path, job.topic, stats), desc=f"extract {job.path.name}", unit="img", disable=not progress):
        if min(rec.pixels.shape) < job.window:
            continue
        image = _to_u8(rec.pixels)
        tiles = WaterfallTiler(job.window, job.stride).tile(image)
        labels = np.full(len(tiles), -1, np.int16)
        if gt:
            labels = window_truth(tiles.positions, job.window, truth.get(stamp_ns(rec.header), []),
                                  list(DEFAULT_CLASSES)).astype(np.int16)
        batches.append(PatchBatch(tiles.patches, labels, job.group, job.source))
    return batches, (f"skipped {stats.skipped} bad image message(s): {dict(stats.reasons)}" if stats.skipped else "")


def _file_batches(job: BagJob, progress: bool = False) -> tuple[list[PatchBatch], str, bool]:
    """One input file's batches, a note on it ("" when nothing to say) and whether it was skipped:
    a file that cannot be read, or holds no image of a window's size, is a note, not a crash."""
    try:
        batches, note = bag_batches(job, progress)
    except (MineJepaError, OSError) as exc:
        return [], f"skipped: {exc}", True
    if not batches:
        return [], f"skipped: no image of at least {job.window} px", True
    return batches, note, False


def _shard_of(job: BagJob, shard: Path, kind: str, split_of_group: dict[str, str],
              provenance: dict[str, Any]) -> tuple[str, bool]:
    """Worker: one input file into one shard store; (note, skipped)."""
    batches, note, skipped = _file_batches(job)
    if not skipped:
        writer = PatchStoreWriter(window=job.window, source_kinds={job.source: kind}, provenance=provenance)
        for batch in batches:
            writer.add(batch)
        writer.write(shard, split_of_group=split_of_group)
    return note, skipped


def extract_bags(out: Path, bags: list[Path], topic: str | None, gt_topic: str | None, window: int = 96, stride: int = 64,
                 source: str = "real", kind: str = "real", test_fraction: float = 0.25, seed: int = 0,
                 progress: bool = True, workers: int = 1, xtf: bool = False) -> PatchStore:
    """Sliding windows of every image in the bags (one group per bag; ``xtf``: the files are XTF
    recordings), labelled where ground truth exists. ``workers`` > 1: the files are processed in
    parallel processes, one shard each (``OUT/shard-NNN``; read with
    :func:`~mine_jepa_ros.training.patches.open_store`), with the same patches, labels, groups and
    splits as one worker's store. A file that cannot be read is skipped with its name and the
    reason, and counted; the others are kept."""
    if len({b.name for b in bags}) != len(bags):
        raise UserError(f"inputs {[str(b) for b in bags]}: two share a name (each file's name is its group)")
    jobs = [BagJob(Path(b), topic, gt_topic, window, stride, source, xtf) for b in bags]
    split_of_group = assign_splits([j.group for j in jobs], test_fraction, 0.0, seed)
    provenance = {"from": "xtf" if xtf else "rosbag2", "bags": [str(b) for b in bags], "stride": stride}
    skipped: list[str] = []
    if workers <= 1:
        writer = PatchStoreWriter(window=window, source_kinds={source: kind}, provenance=provenance)
        for job in tqdm(jobs, desc="extract", unit="file", disable=not progress or len(jobs) < 2):
            batches, note, was_skipped = _file_batches(job, progress)
            for batch in batches:
                writer.add(batch)
            if note:
                print(f"{job.path}: {note}")
            if was_skipped:
                skipped.append(str(job.path))
        _report_skipped(skipped, len(jobs))
        return writer.write(out, split_of_group=split_of_group)
    with sharded_store_dir(out) as tmp, ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(_shard_of, job, tmp / f"shard-{i:03d}", kind, split_of_group, provenance): job
                   for i, job in enumerate(jobs)}
        for future in tqdm(as_completed(futures), total=len(futures), desc=f"extract ({workers} workers)", unit="file",
                           disable=not progress):
            job = futures[future]
            note, was_skipped = future.result()
            if note:
                print(f"{job.path}: {note}")
            if was_skipped:
                skipped.append(str(job.path))
        _report_skipped(skipped, len(jobs))
    return open_store(out)


def _report_skipped(skipped: list[str], total: int) -> None:
    if skipped:
        print(f"skipped {len(skipped)} of {total} file(s): {', '.join(skipped)}")


# -- YOLO folders (Santos et al. 2024 layout) --------------------------------------------------------

YEAR = re.compile(r"_(\d{4})$")


def read_yolo_labels(txt: Path, height: int, width: int) -> list[Detection]:
    """YOLO ``class cx cy w h`` (normalised) -> detections in pixels; a bad line raises naming the file."""
    out: list[Detection] = []
    if not txt.exists():
        return out
    for n, line in enumerate(txt.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            cls, cx, cy, w, h = int(parts[0]), *(float(v) for v in parts[1:5])
        except (ValueError, IndexError) as exc:
            raise UserError(f"{txt}:{n}: expected 'class cx cy w h', got {line!r}") from exc
        if cls not in YOLO_CLASSES or not (0 <= cx <= 1 and 0 <= cy <= 1 and 0 <= w <= 1 and 0 <= h <= 1):
            raise UserError(f"{txt}:{n}: class must be 0 (MILCO) or 1 (NOMBO) and coordinates in [0, 1]: {line!r}")
        box = ((cy - h / 2) * height, (cx - w / 2) * width, (cy + h / 2) * height, (cx + w / 2) * width)
        out.append(Detection(YOLO_CLASSES[cls], 1.0, box, id=f"{txt.stem}-{n}"))
    return out


def extract_yolo_folder(out: Path, folder: Path, window: int = 96, stride: int = 64, test_years: tuple[str, ...] = (),
                        test_fraction: float = 0.25, source: str = "real", seed: int = 0, unlabelled: bool = True,
                        progress: bool = True) -> PatchStore:
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise UserError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    writer = PatchStoreWriter(window=window, source_kinds={source: "real"},
                              provenance={"from": "yolo-folder", "folder": str(folder), "stride": stride})
    rng = np.random.default_rng(seed)
    split_of_group: dict[str, str] | None = {} if test_years else None
    for path in tqdm(images, desc="extract", unit="img", disable=not progress):
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            print(f"{path}: unreadable image, skipped")
            continue
        objects = read_yolo_labels(path.with_suffix(".txt"), *image.shape)
        group = path.stem
        crops, labels = labelled_patches(image, objects, window, stride, rng)
        writer.add(PatchBatch(crops, labels, group, source))
        if unlabelled and min(image.shape) >= window:
            windows, pool = unlabelled_windows(image, window, stride, objects)
            writer.add(PatchBatch(windows, pool, group, source))
        if split_of_group is not None:
            year = YEAR.search(group)
            split_of_group[group] = "test" if year and year.group(1) in test_years else "train"
    return writer.write(out, split_of_group=split_of_group, test_fraction=test_fraction, seed=seed)
