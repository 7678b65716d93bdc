"""``mine-jepa extract``: patch stores from rosbag2 recordings, XTF recordings, YOLO image folders,
image + mask folders or the simulator.

* Files (bags, XTF, images) are a list of per-file jobs (:class:`FileJob`) run by
  :func:`extract_files`: in one process into one store, or with ``workers`` > 1 in parallel
  processes into shards of consecutive files holding the same patches, labels, groups and splits.
  A file that cannot be read is skipped with its name and counted; the others are kept.
* Bags (and XTF recordings, imported first): every sliding window (stride 64) of every image is an
  unlabelled patch; with a ground-truth topic, windows get the scoring module's window labels (class
  of the object whose box centre they hold, background when they touch no box, unlabelled
  otherwise). Group = file.
* Wherever objects are known (ground truth, YOLO labels, masks, the simulator), every patch also
  gets the class of each of its 16-pixel tokens (``tokens.u8``: the dense head's targets, by
  :func:`~mine_jepa_ros.evaluate.scoring.token_truth`; masks: a token holding at least a quarter of
  mask pixels is an object, one with none background), so a dense head trains on windows at
  every offset, as the detector sees them.
* YOLO folders (the Santos et al. layout, ``NNNN_YYYY.jpg`` + ``NNNN_YYYY.txt`` with
  ``class cx cy w h`` normalised, class 0 = MILCO, 1 = NOMBO, empty = background): a crop centred
  on each object, background crops from windows that overlap no object (drawn from the seed and the
  image name), and every sliding window as unlabelled data. Group = image; ``--test-years`` puts
  whole years into the test split.
* Image + mask folders (the SDVDs layout, ``*/images/*`` + ``*/masks/*``): object vs background
  windows by the number of mask pixels they hold. Group = image name.
* Simulator (one process): surveys (one group each) with object-centred crops, background crops
  and all windows.
* ``normalisation`` (``--normalise range``): every recording, survey or image first goes through
  the input normalisation the pipeline applies (:mod:`mine_jepa_ros.detect.normalise`: its rows in
  ping order, one normaliser per recording); the store records it (``meta.json``
  ``normalisation``) and a probe on the store puts it into the model's metadata, so the node does
  the same to what it receives.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
from tqdm import tqdm

from mine_jepa_ros.evaluate.scoring import token_truth, window_truth
from mine_jepa_ros.detect.normalise import NormalisationConfig, RangeNormaliser, normalise_image
from mine_jepa_ros.detect.tiling import StreamingTiler, Tiles, WaterfallTiler
from mine_jepa_ros.errors import MineJepaError, UserError
from mine_jepa_ros.io.bag import ReadStats
from mine_jepa_ros.io.detections import Detection
from mine_jepa_ros.io.image_codec import to_unit_intensity, unit_to_uint8
from mine_jepa_ros.io.image_folders import folder_images, image_year, list_images, read_grey, read_yolo_labels
from mine_jepa_ros.io.recording import RecordingOptions, open_recording
from mine_jepa_ros.sim.survey import FleetVariation, Survey, SurveyConfig, simulate_survey
from mine_jepa_ros.training.patches import (
    BACKGROUND_POOL,
    DEFAULT_CLASSES,
    TOKEN_SIZE,
    UNLABELLED,
    PatchBatch,
    PatchStore,
    PatchStoreWriter,
    assign_splits,
    open_store,
    sharded_store_dir,
)

T = TypeVar("T")


def normalised_u8(image_u8: np.ndarray, normalisation: NormalisationConfig) -> np.ndarray:
    """An 8-bit image (rows in ping order) through the input normalisation, as the pipeline does it."""
    if not normalisation.active:
        return image_u8
    return unit_to_uint8(normalise_image(to_unit_intensity(image_u8, 255.0), normalisation))  # as a mono8 image decodes


def centred_crop(image: np.ndarray, row: float, col: float, window: int) -> np.ndarray:
    """``window`` x ``window`` crop centred on (row, col); the image is reflected at its borders."""
    half = window // 2
    padded = np.pad(image, half, mode="reflect") if min(image.shape) > half else np.pad(image, half, mode="edge")
    r, c = int(round(row)) + half, int(round(col)) + half
    return np.ascontiguousarray(padded[r - half : r - half + window, c - half : c - half + window])


def window_tokens(positions: np.ndarray, window: int, objects: list[Detection]) -> np.ndarray:
    """The token targets (:func:`~mine_jepa_ros.evaluate.scoring.token_truth`) of windows at ``positions``."""
    return token_truth(positions, window, window // TOKEN_SIZE, objects, list(DEFAULT_CLASSES))


def labelled_patches(image_u8: np.ndarray, objects: list[Detection], window: int, stride: int,
                     rng: np.random.Generator, background_per_object: float = 1.0, min_background: int = 2,
                     offset_crops: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Object-centred crops (their class) + background crops from windows touching no object, and
    every crop's token targets (:func:`window_tokens`).

    ``offset_crops`` adds that many crops per object with its centre moved up to ``stride / 2``
    pixels each way: where a sliding window at ``stride`` sees it in deployment."""
    crops, labels, corners = [], [], []
    half = window // 2
    for obj in objects:
        if obj.class_name not in DEFAULT_CLASSES:
            continue
        row, col = obj.centre
        shifts = [(0.0, 0.0), *rng.uniform(-stride / 2, stride / 2, size=(offset_crops, 2))]
        for dr, dc in shifts:
            crops.append(centred_crop(image_u8, row + dr, col + dc, window))
            labels.append(DEFAULT_CLASSES.index(obj.class_name))
            corners.append((int(round(row + dr)) - half, int(round(col + dc)) - half))
    tiles = WaterfallTiler(window, stride).tile(image_u8)
    truth = window_truth(tiles.positions, window, objects, list(DEFAULT_CLASSES))
    clean = np.nonzero(truth == 0)[0]
    n_bg = min(len(clean), max(min_background, int(round(background_per_object * len(crops)))))
    for i in rng.choice(clean, size=n_bg, replace=False) if n_bg else []:
        crops.append(tiles.patches[i])
        labels.append(0)
        corners.append(tuple(tiles.positions[i]))
    side = window // TOKEN_SIZE
    if not crops:
        return np.zeros((0, window, window), np.uint8), np.zeros(0, np.int16), np.zeros((0, side, side), np.int64)
    positions = np.array(corners, np.int64).reshape(-1, 2)
    return np.stack(crops).astype(np.uint8), np.array(labels, np.int16), window_tokens(positions, window, objects)


def unlabelled_windows(image_u8: np.ndarray, window: int, stride: int,
                       objects: list[Detection] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Every sliding window, labelled :data:`BACKGROUND_POOL` where ``objects`` (the ground truth,
    when known) shows it touches none, else unlabelled; with ``objects``, their token targets too."""
    tiles = WaterfallTiler(window, stride).tile(image_u8)
    labels = np.full(len(tiles), UNLABELLED, np.int16)
    if objects is None:
        return tiles.patches, labels, None
    labels[window_truth(tiles.positions, window, objects, list(DEFAULT_CLASSES)) == 0] = BACKGROUND_POOL
    return tiles.patches, labels, window_tokens(tiles.positions, window, objects)


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
    normalise: str = "none"  # input normalisation of each survey before cutting (detect.normalise: none | range)


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
    normalisation = NormalisationConfig(cfg.normalise)
    writer = PatchStoreWriter(window=window, source_kinds={"syn": "syn"},
                              provenance={"from": "simulator", "config": cfg.__dict__, "stride": stride,
                                          "test_fraction": test_fraction},
                              normalisation=normalisation.to_dict() if normalisation.active else {})
    rng = np.random.default_rng(cfg.seed)
    for group, survey in tqdm(simulated_surveys(cfg), total=cfg.surveys, desc="simulate", disable=not progress):
        image = normalised_u8(survey.to_uint8(), normalisation)
        crops, labels, tokens = labelled_patches(image, survey.ground_truth(), window, stride, rng,
                                                 offset_crops=cfg.offset_crops)
        writer.add(PatchBatch(crops, labels, group, "syn", tokens))
        if unlabelled:
            windows, pool, window_targets = unlabelled_windows(image, window, stride, survey.ground_truth())
            writer.add(PatchBatch(windows, pool, group, "syn", window_targets))
    return writer.write(out, test_fraction=test_fraction, seed=cfg.seed)


# -- files: one job per input file, run in one process or in parallel processes into shards -------


class FileJob(Protocol):
    """One input file of an extraction (a bag, an XTF recording, an image): picklable, so that a
    worker process can run it."""

    @property
    def path(self) -> Path: ...

    @property
    def group(self) -> str: ...

    def batches(self, progress: bool = False) -> tuple[list[PatchBatch], str]:
        """The file's patches and a note on what was skipped in it ("" when nothing)."""
        ...


@dataclass(frozen=True)
class StoreSpec:
    """What every store (or shard) of one extraction shares."""

    window: int
    source_kinds: dict[str, str]
    provenance: dict[str, Any]
    classes: tuple[str, ...] = DEFAULT_CLASSES
    normalisation: NormalisationConfig = NormalisationConfig()

    def writer(self) -> PatchStoreWriter:
        return PatchStoreWriter(window=self.window, classes=self.classes, source_kinds=dict(self.source_kinds),
                                provenance=self.provenance,
                                normalisation=self.normalisation.to_dict() if self.normalisation.active else {})


def _file_batches(job: FileJob, progress: bool = False) -> tuple[list[PatchBatch], str, bool]:
    """One input file's batches, a note on it ("" when nothing to say) and whether it was skipped:
    a file that cannot be read, or holds no window, is a note, not a crash."""
    try:
        batches, note = job.batches(progress)
    except (MineJepaError, OSError) as exc:
        return [], f"skipped: {exc}", True
    if not sum(len(b.patches) for b in batches):
        return [], note or "skipped: no usable window in it", True
    return batches, note, False


def _write_shard(jobs: list[FileJob], shard: Path, spec: StoreSpec,
                 split_of_group: dict[str, str]) -> list[tuple[str, bool]]:
    """Worker: consecutive input files into one shard store (none when all are skipped); each
    file's (note, skipped)."""
    writer = spec.writer()
    results = []
    for job in jobs:
        batches, note, skipped = _file_batches(job)
        for batch in batches:
            writer.add(batch)
        results.append((note, skipped))
    if writer.batches:
        writer.write(shard, split_of_group=split_of_group)
    return results


def consecutive_chunks(items: Sequence[T], count: int) -> list[list[T]]:
    """``items`` cut into ``count`` runs of consecutive items whose sizes differ by at most one."""
    bounds = np.linspace(0, len(items), count + 1).round().astype(int)
    return [list(items[a:b]) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def extract_files(out: Path, jobs: Sequence[FileJob], spec: StoreSpec, split_of_group: dict[str, str],
                  workers: int = 1, progress: bool = True) -> PatchStore:
    """Every job's patches into one store at ``out``; with ``workers`` > 1, in that many spawned
    processes, into shards of consecutive files (``OUT/shard-NNN``, at most four per worker, read
    with :func:`~mine_jepa_ros.training.patches.open_store`) holding the same patches, labels,
    groups and splits, in the same order, as one worker's store. A file that cannot be read is
    skipped with its name and the reason, and counted; the others are kept."""
    skipped: list[str] = []

    def report(job: FileJob, note: str, was_skipped: bool) -> None:
        if note:
            print(f"{job.path}: {note}")
        if was_skipped:
            skipped.append(str(job.path))

    if workers <= 1:
        writer = spec.writer()
        for job in tqdm(jobs, desc="extract", unit="file", disable=not progress or len(jobs) < 2):
            batches, note, was_skipped = _file_batches(job, progress)
            for batch in batches:
                writer.add(batch)
            report(job, note, was_skipped)
        _report_skipped(skipped, len(jobs))
        return writer.write(out, split_of_group=split_of_group)
    chunks = consecutive_chunks(jobs, min(len(jobs), 4 * workers))
    with sharded_store_dir(out) as tmp, ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool, \
            tqdm(total=len(jobs), desc=f"extract ({workers} workers)", unit="file", disable=not progress) as bar:
        futures = {pool.submit(_write_shard, chunk, tmp / f"shard-{i:03d}", spec, split_of_group): chunk
                   for i, chunk in enumerate(chunks)}
        for future in as_completed(futures):
            for job, (note, was_skipped) in zip(futures[future], future.result()):
                report(job, note, was_skipped)
            bar.update(len(futures[future]))
        _report_skipped(skipped, len(jobs))
    return open_store(out)


def _report_skipped(skipped: list[str], total: int) -> None:
    if skipped:
        print(f"skipped {len(skipped)} of {total} file(s): {', '.join(skipped)}")


# -- rosbag2 and XTF --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordingJob:
    """One recording of an extraction: a rosbag2 (frames, pings or a driver's messages) or an XTF file,
    read through the input layer (:mod:`mine_jepa_ros.io.recording`)."""

    path: Path
    options: RecordingOptions
    window: int
    stride: int
    source: str
    normalisation: NormalisationConfig = NormalisationConfig()
    use_truth: bool = True  # False: every window unlabelled (SSL on a new survey, whatever it holds)

    @property
    def group(self) -> str:
        return self.path.name

    def batches(self, progress: bool = False) -> tuple[list[PatchBatch], str]:
        """Every sliding window of the recording's waterfall (one group), labelled where it has ground
        truth: the windows of the waterfall tiled whole, whether it came as frames, pings or driver
        messages (a change of ping width starts a new waterfall)."""
        recording = open_recording(self.path, self.options)
        stats = ReadStats()
        tiler = StreamingTiler(self.window, self.stride)
        normaliser = RangeNormaliser(self.normalisation) if self.normalisation.active else None
        parts: list[Tiles] = []
        for block in tqdm(recording.waterfall(stats), desc=f"extract {self.path.name}", unit="msg", disable=not progress):
            if block.pixels.shape[1] < self.window:
                stats.skip("narrower than a window", f"{block.pixels.shape[1]} samples per row")
                continue
            pixels = block.pixels if normaliser is None else normaliser(block.pixels)  # as the pipeline, ping by ping
            parts.append(tiler.push(unit_to_uint8(pixels)))
        parts.append(tiler.flush())
        tiles = Tiles.concat([p for p in parts if len(p)], self.window)
        labels = np.full(len(tiles), UNLABELLED, np.int16)
        tokens = None
        if recording.has_truth and self.use_truth:
            objects = recording.objects()
            labels = window_truth(tiles.positions, self.window, objects, list(DEFAULT_CLASSES)).astype(np.int16)
            tokens = window_tokens(tiles.positions, self.window, objects)
        notes = [recording.note]
        if stats.skipped:
            notes.append(f"skipped {stats.skipped} message(s): {dict(stats.reasons)}")
        if not len(tiles):
            notes.insert(0, f"skipped: no waterfall of at least {self.window} x {self.window} px")
            return [], "; ".join(n for n in notes if n)
        return [PatchBatch(tiles.patches, labels, self.group, self.source, tokens)], "; ".join(n for n in notes if n)


def extract_recordings(out: Path, recordings: list[Path], options: RecordingOptions | None = None, window: int = 96,
                       stride: int = 64, source: str = "real", kind: str = "real", test_fraction: float = 0.25,
                       seed: int = 0, progress: bool = True, workers: int = 1,
                       normalisation: NormalisationConfig = NormalisationConfig(), use_truth: bool = True) -> PatchStore:
    """Sliding windows of every recording's waterfall (bags of frames, pings or driver messages, and
    ``.xtf`` files; one group each), labelled where ground truth exists (and ``use_truth``);
    ``workers`` as in :func:`extract_files`; each recording through ``normalisation`` first."""
    if len({b.name for b in recordings}) != len(recordings):
        raise UserError(f"inputs {[str(b) for b in recordings]}: two share a name (each file's name is its group)")
    options = options or RecordingOptions()
    jobs = [RecordingJob(Path(b), options, window, stride, source, normalisation, use_truth) for b in recordings]
    kinds = sorted({"xtf" if Path(b).suffix.lower() == ".xtf" else "rosbag2" for b in recordings})
    spec = StoreSpec(window, {source: kind}, {"from": "+".join(kinds), "bags": [str(b) for b in recordings],
                                              "stride": stride}, normalisation=normalisation)
    split_of_group = assign_splits([j.group for j in jobs], test_fraction, 0.0, seed)
    return extract_files(out, jobs, spec, split_of_group, workers, progress)


# -- YOLO folders (Santos et al. 2024 layout) --------------------------------------------------------

@dataclass(frozen=True)
class YoloImageJob:
    """One image of a YOLO folder with its ``.txt`` labels beside it; its random background crops
    are drawn from (seed, image name), so they do not depend on which process runs it."""

    path: Path
    window: int
    stride: int
    source: str
    seed: int
    unlabelled: bool = True
    normalisation: NormalisationConfig = NormalisationConfig()

    @property
    def group(self) -> str:
        return self.path.stem

    def batches(self, progress: bool = False) -> tuple[list[PatchBatch], str]:
        """Object-centred and background crops, and every window as unlabelled data."""
        image = normalised_u8(read_grey(self.path), self.normalisation)
        objects = read_yolo_labels(self.path.with_suffix(".txt"), *image.shape)
        rng = np.random.default_rng([self.seed, zlib.crc32(self.group.encode())])
        crops, labels, tokens = labelled_patches(image, objects, self.window, self.stride, rng)
        batches = [PatchBatch(crops, labels, self.group, self.source, tokens)]
        if self.unlabelled and min(image.shape) >= self.window:
            windows, pool, window_targets = unlabelled_windows(image, self.window, self.stride, objects)
            batches.append(PatchBatch(windows, pool, self.group, self.source, window_targets))
        return batches, ""


def extract_yolo_folder(out: Path, folder: Path, window: int = 96, stride: int = 64, test_years: tuple[str, ...] = (),
                        test_fraction: float = 0.25, source: str = "real", seed: int = 0, unlabelled: bool = True,
                        progress: bool = True, workers: int = 1,
                        normalisation: NormalisationConfig = NormalisationConfig()) -> PatchStore:
    """A YOLO folder's images into a store (one group per image); ``test_years`` puts whole years
    into the test split, else groups are drawn at random; ``workers`` as in :func:`extract_files`;
    each image through ``normalisation`` first (its rows in order)."""
    jobs = [YoloImageJob(image.path, window, stride, source, seed, unlabelled, normalisation)
            for image in folder_images(folder, layout="yolo")]
    spec = StoreSpec(window, {source: "real"}, {"from": "yolo-folder", "folder": str(folder), "stride": stride},
                     normalisation=normalisation)
    if test_years:
        split_of_group = {job.group: "test" if image_year(job.path) in test_years else "train" for job in jobs}
    else:
        split_of_group = assign_splits([job.group for job in jobs], test_fraction, 0.0, seed)
    return extract_files(out, jobs, spec, split_of_group, workers, progress)


# -- image + mask folders (SDVDs layout) -------------------------------------------------------------

MASK_CLASSES = ("background", "object")


@dataclass(frozen=True)
class MaskTileJob:
    """One image with its binary object mask (same name under ``masks/``)."""

    path: Path
    mask: Path
    window: int
    stride: int
    min_object_pixels: int
    source: str
    normalisation: NormalisationConfig = NormalisationConfig()

    @property
    def group(self) -> str:
        return self.path.stem

    def batches(self, progress: bool = False) -> tuple[list[PatchBatch], str]:
        """Windows with at least ``min_object_pixels`` mask pixels (object) or none (background);
        the ones in between are left out."""
        image, mask = normalised_u8(read_grey(self.path), self.normalisation), read_grey(self.mask)
        if image.shape != mask.shape:
            raise UserError(f"{self.mask}: mask of {mask.shape} for an image of {image.shape}")
        tiles = WaterfallTiler(self.window, self.stride).tile(image)
        if not len(tiles):
            return [], f"skipped: smaller than a window ({self.window} px)"
        windows = np.stack([mask[r : r + self.window, c : c + self.window] > 127 for r, c in tiles.positions])
        counts = windows.sum(axis=(1, 2))
        labels = np.where(counts >= self.min_object_pixels, 1, np.where(counts == 0, 0, -1)).astype(np.int16)
        keep = labels >= 0
        tokens = None
        if self.window % TOKEN_SIZE == 0:
            side = self.window // TOKEN_SIZE
            per_token = windows[keep].reshape(-1, side, TOKEN_SIZE, side, TOKEN_SIZE).sum(axis=(2, 4))
            tokens = np.where(per_token * 4 >= TOKEN_SIZE * TOKEN_SIZE, 1, np.where(per_token == 0, 0, -1))
        return [PatchBatch(tiles.patches[keep], labels[keep], self.group, self.source, tokens)], ""


def extract_mask_folders(out: Path, roots: list[Path], window: int = 96, stride: int = 64, min_object_pixels: int = 20,
                         test_fraction: float = 0.3, source: str = "sdvd", seed: int = 0, progress: bool = True,
                         workers: int = 1, normalisation: NormalisationConfig = NormalisationConfig()) -> PatchStore:
    """Object-vs-background windows from ``*/images/*`` + ``*/masks/*`` folders (SDVDs layout); one
    group per image name, so the same tile in several folders stays in one split; ``workers`` as in
    :func:`extract_files`; each image through ``normalisation`` first."""
    jobs = [MaskTileJob(image.path, image.labels, window, stride, min_object_pixels, source, normalisation)
            for root in roots for image in list_images(root, "masks") if image.labels is not None]
    if not jobs:
        raise UserError(f"no images/ + masks/ pairs under {[str(r) for r in roots]}")
    spec = StoreSpec(window, {source: "real"}, {"from": "mask folders", "roots": [str(r) for r in roots],
                                                 "stride": stride, "min_object_pixels": min_object_pixels},
                     classes=MASK_CLASSES, normalisation=normalisation)
    split_of_group = assign_splits([job.group for job in jobs], test_fraction, 0.0, seed)
    return extract_files(out, jobs, spec, split_of_group, workers, progress)
