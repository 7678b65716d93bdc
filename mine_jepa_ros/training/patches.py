"""Patch stores: many 96x96 uint8 patches in a few files, with labels, groups and splits.

A store is a directory::

    patches.u8    (N, W, W) uint8, raw, read as a numpy memmap (no per-patch files)
    labels.i16    (N,) int16: an index into ``classes``; -1 unlabelled; -2 a sliding window known to touch no
                  object (ground truth), kept out of the balanced labelled set: the pool hard negatives are
                  mined from (:data:`BACKGROUND_POOL`)
    groups.i32    (N,) int32: the source image / survey each patch came from
    splits.u8     (N,) uint8: 0 train, 1 val, 2 test - assigned per group, never per patch
    sources.u8    (N,) uint8: index into ``sources`` (per-source normalisation statistics)
    tokens.u8     (N, W/16, W/16) uint8, optional: the class of every 16-pixel patch token (the
                  dense head's targets, :func:`~mine_jepa_ros.evaluate.scoring.token_truth`);
                  255 where unknown (unlabelled data, or a token left out at an object's edge)
    meta.json     window, count, classes, sources [{name, kind, mean, std}], group names, provenance

Overlapping windows of one image share its group, and splits are drawn per group, so no test patch
overlaps a training patch. Stores are written into a temporary directory and renamed into place.

**Shards.** A store can be several stores (``extract --workers N`` writes shards of consecutive
input files into ``OUT/shard-NNN``; other machines' extractions are more of them): :func:`open_store`
takes a store, a directory of shards, or a list of either, and gives one :class:`ShardedPatchStore`
with the same interface (patches read from each shard's memmap, nothing copied). Sources of the same name are
pooled: each shard records its pixel count, sum and sum of squares per source, so the pooled mean and
standard deviation are those one store of all the patches would have. Splits are per group, and a
sharded extraction draws them over all groups at once (:func:`assign_splits`), as one store does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mine_jepa_ros.atomic import atomic_dir
from mine_jepa_ros.errors import StoreError

SPLITS = ("train", "val", "test")
UNLABELLED = -1
BACKGROUND_POOL = -2
"""Label of a sliding window that touches no object: unlabelled for the balanced probes, background
for hard-negative mining (``probe --hard-negative-rounds``)."""
DEFAULT_CLASSES = ("background", "MILCO", "NOMBO")
TOKEN_SIZE = 16
"""Pixels per side of a ViT patch token (every arch is patch 16)."""
UNKNOWN_TOKEN = 255
"""A token whose class is not known (``tokens.u8``); training ignores it."""
TOKENS_FILE = "tokens.u8"
FILES = {"patches": ("patches.u8", np.uint8), "labels": ("labels.i16", np.int16), "groups": ("groups.i32", np.int32),
         "splits": ("splits.u8", np.uint8), "sources": ("sources.u8", np.uint8)}


def assign_splits(groups: Sequence[str], test_fraction: float = 0.25, val_fraction: float = 0.0,
                  seed: int = 0) -> dict[str, str]:
    """Group -> split, at random by group (the same for the same sorted groups and seed)."""
    groups = sorted(set(groups))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(groups))
    n_test = max(1, int(round(test_fraction * len(groups)))) if test_fraction > 0 and len(groups) > 1 else 0
    n_val = int(round(val_fraction * len(groups)))
    return {groups[gi]: "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            for rank, gi in enumerate(order)}


@dataclass
class PatchBatch:
    """Patches of one group (image / survey) on their way into a store."""

    patches: np.ndarray  # (n, W, W) uint8
    labels: np.ndarray  # (n,) int
    group: str
    source: str = "syn"
    tokens: np.ndarray | None = None  # (n, W/16, W/16) class per token, -1 unknown; None: none known


@dataclass
class PatchStoreWriter:
    """Collects :class:`PatchBatch` es and writes one store, assigning splits per group."""

    window: int = 96
    classes: Sequence[str] = DEFAULT_CLASSES
    source_kinds: dict[str, str] = field(default_factory=dict)  # source name -> "real" | "syn"
    provenance: dict[str, Any] = field(default_factory=dict)
    normalisation: dict[str, Any] = field(default_factory=dict)  # what was done to the images first ({}: nothing)
    batches: list[PatchBatch] = field(default_factory=list)

    def add(self, batch: PatchBatch) -> None:
        if batch.patches.ndim != 3 or batch.patches.shape[1:] != (self.window, self.window):
            raise ValueError(f"group {batch.group}: patches of shape {batch.patches.shape}, expected (n, {self.window}, {self.window})")
        if batch.patches.dtype != np.uint8:
            raise ValueError(f"group {batch.group}: patches must be uint8, got {batch.patches.dtype}")
        if len(batch.labels) != len(batch.patches):
            raise ValueError(f"group {batch.group}: {len(batch.labels)} labels for {len(batch.patches)} patches")
        side = self.window // TOKEN_SIZE
        if batch.tokens is not None and batch.tokens.shape != (len(batch.patches), side, side):
            raise ValueError(f"group {batch.group}: token targets of shape {batch.tokens.shape}, expected "
                             f"({len(batch.patches)}, {side}, {side})")
        if self.window % TOKEN_SIZE:  # windows that are not whole tokens have no token targets
            batch = PatchBatch(batch.patches, batch.labels, batch.group, batch.source)
        if len(batch.patches):
            self.batches.append(batch)

    def write(self, path: Path | str, split_of_group: dict[str, str] | None = None, test_fraction: float = 0.25,
              val_fraction: float = 0.0, seed: int = 0) -> PatchStore:
        """Write the store; groups go to splits by ``split_of_group`` or at random (by group)."""
        final = Path(path)
        if final.exists():
            raise StoreError(f"{final}: exists already; not overwriting")
        if not self.batches:
            raise StoreError(f"{final}: no patches to write")
        groups = sorted({b.group for b in self.batches})
        if split_of_group is None:
            split_of_group = assign_splits(groups, test_fraction, val_fraction, seed)
        sources = sorted({b.source for b in self.batches})
        n = sum(len(b.patches) for b in self.batches)
        final.parent.mkdir(parents=True, exist_ok=True)
        with atomic_dir(final) as tmp:
            mm = {key: np.memmap(tmp / name, dtype=dt, mode="w+", shape=((n, self.window, self.window) if key == "patches" else (n,)))
                  for key, (name, dt) in FILES.items()}
            side = self.window // TOKEN_SIZE
            with_tokens = any(b.tokens is not None for b in self.batches)
            tokens = np.memmap(tmp / TOKENS_FILE, np.uint8, "w+", shape=(n, side, side)) if with_tokens else None
            i = 0
            sums = np.zeros(len(sources)), np.zeros(len(sources)), np.zeros(len(sources))
            for b in self.batches:
                if tokens is not None:
                    tokens[i : i + len(b.patches)] = (UNKNOWN_TOKEN if b.tokens is None else
                                                     np.where(b.tokens < 0, UNKNOWN_TOKEN, b.tokens))
                k = len(b.patches)
                src = sources.index(b.source)
                mm["patches"][i : i + k] = b.patches
                mm["labels"][i : i + k] = b.labels
                mm["groups"][i : i + k] = groups.index(b.group)
                mm["splits"][i : i + k] = SPLITS.index(split_of_group.get(b.group, "train"))
                mm["sources"][i : i + k] = src
                x = b.patches.astype(np.float64) / 255.0
                sums[0][src] += x.size
                sums[1][src] += x.sum()
                sums[2][src] += (x * x).sum()
                i += k
            for m in [*mm.values(), *([] if tokens is None else [tokens])]:
                m.flush()
            del mm, tokens
            stats = []
            for s, name in enumerate(sources):
                mean = sums[1][s] / sums[0][s]
                std = float(np.sqrt(max(sums[2][s] / sums[0][s] - mean * mean, 1e-12)))
                stats.append({"name": name, "kind": self.source_kinds.get(name, "syn"), "mean": float(mean), "std": std,
                              "pixels": int(sums[0][s]), "sum": float(sums[1][s]), "sumsq": float(sums[2][s])})
            meta = {"version": 1, "window": self.window, "count": n, "classes": list(self.classes), "sources": stats,
                    "groups": groups, "split_of_group": split_of_group, "provenance": self.provenance,
                    "token_size": TOKEN_SIZE if with_tokens else None, "normalisation": self.normalisation}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        return PatchStore(final)


class PatchStore:
    """Read side of a store: memory-mapped arrays and metadata; cheap to open."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise StoreError(f"{self.path}: not a patch store (no meta.json); make one with `mine-jepa extract`")
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise StoreError(f"{meta_path}: not valid JSON ({exc})") from exc
        try:
            self.window = int(self.meta["window"])
            n = int(self.meta["count"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"{meta_path}: no valid 'window' and 'count' ({exc!r})") from exc
        self.arrays: dict[str, np.ndarray] = {}
        for key, (name, dt) in FILES.items():
            file = self.path / name
            shape = (n, self.window, self.window) if key == "patches" else (n,)
            expected = int(np.prod(shape)) * np.dtype(dt).itemsize
            if not file.is_file() or file.stat().st_size != expected:
                raise StoreError(f"{file}: missing or truncated (expected {expected} bytes)")
            self.arrays[key] = np.memmap(file, dtype=dt, mode="r", shape=shape)
        self._tokens: np.ndarray | None = None
        if self.meta.get("token_size"):
            file, side = self.path / TOKENS_FILE, self.window // int(self.meta["token_size"])
            if not file.is_file() or file.stat().st_size != n * side * side:
                raise StoreError(f"{file}: missing or truncated (expected {n * side * side} bytes)")
            self._tokens = np.memmap(file, dtype=np.uint8, mode="r", shape=(n, side, side))

    def __len__(self) -> int:
        return int(self.meta["count"])

    @property
    def tokens(self) -> np.ndarray | None:
        """(N, W/16, W/16) uint8 class per patch token (:data:`UNKNOWN_TOKEN` where unknown), or
        None for a store without token targets (extracted before they existed, or from unlabelled data)."""
        return self._tokens

    def token_indices(self, split: str) -> np.ndarray:
        """The patches of ``split`` with at least one known token: what a dense head trains on."""
        if self.tokens is None:
            return np.zeros(0, np.int64)
        known = (np.asarray(self.tokens) != UNKNOWN_TOKEN).reshape(len(self), -1).any(axis=1)
        return np.flatnonzero(known & (self.arrays["splits"] == SPLITS.index(split)))

    @property
    def patches(self) -> np.ndarray:
        return self.arrays["patches"]

    @property
    def labels(self) -> np.ndarray:
        return self.arrays["labels"]

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def sources(self) -> list[dict[str, Any]]:
        return list(self.meta["sources"])

    @property
    def normalisation(self) -> dict[str, Any]:
        """The input normalisation the images went through before windows were cut ({}: none;
        :mod:`mine_jepa_ros.detect.normalise`); a model trained on the store applies the same."""
        return dict(self.meta.get("normalisation") or {})

    def indices(self, split: str | None = None, labelled: bool | None = None) -> np.ndarray:
        mask = np.ones(len(self), bool)
        if split is not None:
            mask &= self.arrays["splits"] == SPLITS.index(split)
        if labelled is not None:
            mask &= (self.arrays["labels"] >= 0) == labelled
        return np.nonzero(mask)[0]

    def norm_stats(self, idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per-patch (mean, std) from each patch's source statistics."""
        src = self.arrays["sources"] if idx is None else self.arrays["sources"][idx]
        means = np.array([s["mean"] for s in self.sources], np.float32)
        stds = np.array([s["std"] for s in self.sources], np.float32)
        return means[src], stds[src]

    def mean_std(self, idx: np.ndarray) -> tuple[float, float]:
        """Patch-weighted average of the source statistics of ``idx`` (for a deployable checkpoint)."""
        m, s = self.norm_stats(idx)
        return float(m.mean()), float(s.mean())

    def summary(self) -> str:
        counts = {split: len(self.indices(split)) for split in SPLITS}
        labelled = {split: np.bincount(self.labels[self.indices(split, True)], minlength=len(self.classes)).tolist()
                    for split in SPLITS}
        return (f"{self.path}: {len(self)} patches of {self.window}px in {len(self.meta['groups'])} groups; "
                f"splits {counts}; labelled per class {self.classes}: {labelled}; sources "
                + ", ".join(f"{s['name']} ({s['kind']}, mean {s['mean']:.3f}, std {s['std']:.3f})" for s in self.sources))


class ConcatPatches:
    """The patches of several shards as one read-only (N, W, W) array: indexing with an integer
    array, a slice or an integer reads each shard's memmap and returns an ndarray in the asked order."""

    def __init__(self, parts: Sequence[np.ndarray]) -> None:
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.shape = (int(self.offsets[-1]), *self.parts[0].shape[1:])
        self.dtype = self.parts[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: int | slice | np.ndarray | Sequence[int]) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            k = int(key) % len(self)
            part = int(np.searchsorted(self.offsets, k, side="right") - 1)
            return np.asarray(self.parts[part][k - self.offsets[part]])
        idx = np.arange(len(self))[key] if isinstance(key, slice) else np.asarray(key, np.int64)
        out = np.empty((len(idx), *self.shape[1:]), self.dtype)
        which = np.searchsorted(self.offsets, idx, side="right") - 1
        for part in np.unique(which):
            at = np.flatnonzero(which == part)
            out[at] = self.parts[part][idx[at] - self.offsets[part]]
        return out

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        whole = np.concatenate([np.asarray(p) for p in self.parts])
        return whole if dtype is None else whole.astype(dtype)


def _pooled(entries: list[dict[str, Any]], where: str) -> dict[str, Any]:
    """One source's statistics over several shards (from their pixel counts and sums)."""
    if len(entries) == 1:
        return dict(entries[0])
    if any(k not in e for e in entries for k in ("pixels", "sum", "sumsq")):
        raise StoreError(f"{where}: source {entries[0]['name']!r} is in several shards without pixel sums "
                         "(written before sharding existed); extract them again")
    n = sum(e["pixels"] for e in entries)
    mean = sum(e["sum"] for e in entries) / n
    std = float(np.sqrt(max(sum(e["sumsq"] for e in entries) / n - mean * mean, 1e-12)))
    return {"name": entries[0]["name"], "kind": entries[0]["kind"], "mean": float(mean), "std": std, "pixels": n,
            "sum": sum(e["sum"] for e in entries), "sumsq": sum(e["sumsq"] for e in entries)}


class ShardedPatchStore(PatchStore):
    """Several stores read as one (the :class:`PatchStore` interface): groups and sources are
    renumbered over all shards, sources of the same name pooled."""

    def __init__(self, shards: Sequence[PatchStore], path: Path) -> None:  # no super().__init__: no files of its own
        if not shards:
            raise StoreError(f"{path}: no shards")
        self.shards, self.path = list(shards), path
        first = self.shards[0]
        for shard in self.shards[1:]:
            if shard.window != first.window or shard.classes != first.classes:
                raise StoreError(f"{shard.path}: {shard.window}px windows of {shard.classes}, but {first.path} has "
                                 f"{first.window}px windows of {first.classes}")
            if shard.normalisation != first.normalisation:
                raise StoreError(f"{shard.path}: input normalisation {shard.normalisation or 'none'}, but {first.path} "
                                 f"has {first.normalisation or 'none'}: shards of one store share it")
        self.window = first.window
        names = sorted({s["name"] for shard in self.shards for s in shard.sources})
        pooled = [_pooled([s for shard in self.shards for s in shard.sources if s["name"] == name], str(path)) for name in names]
        groups = sorted({g for shard in self.shards for g in shard.meta["groups"]})
        self.arrays: dict[str, np.ndarray] = {}
        for key in ("labels", "splits"):
            self.arrays[key] = np.concatenate([shard.arrays[key] for shard in self.shards])
        self.arrays["groups"] = np.concatenate([
            np.array([groups.index(g) for g in shard.meta["groups"]], np.int32)[shard.arrays["groups"]] for shard in self.shards])
        self.arrays["sources"] = np.concatenate([
            np.array([names.index(s["name"]) for s in shard.sources], np.uint8)[shard.arrays["sources"]] for shard in self.shards])
        self._patches = ConcatPatches([shard.patches for shard in self.shards])
        side = self.window // TOKEN_SIZE
        self._tokens = None
        if any(shard.tokens is not None for shard in self.shards):  # small: (N, 6, 6) bytes, read into memory
            self._tokens = np.concatenate([np.asarray(shard.tokens) if shard.tokens is not None else
                                           np.full((len(shard), side, side), UNKNOWN_TOKEN, np.uint8) for shard in self.shards])
        self.meta: dict[str, Any] = {
            "version": 1, "window": self.window, "count": len(self._patches), "classes": first.classes, "sources": pooled,
            "groups": groups, "shards": [str(shard.path) for shard in self.shards],
            "token_size": TOKEN_SIZE if self._tokens is not None else None, "normalisation": first.normalisation,
            "provenance": {"shards": [shard.meta.get("provenance", {}) for shard in self.shards]},
        }

    def __len__(self) -> int:
        return len(self._patches)

    @property
    def patches(self) -> ConcatPatches:  # type: ignore[override]  # indexes like the memmap it stands for
        return self._patches

    def summary(self) -> str:
        return f"{len(self.shards)} shards: " + super().summary()


@contextmanager
def sharded_store_dir(final: Path) -> Iterator[Path]:
    """A hidden sibling directory to write shards (``shard-NNN`` stores) into, renamed to ``final``
    when the block ends without an error and holds at least one shard; removed otherwise."""
    if final.exists():
        raise StoreError(f"{final}: exists already; not overwriting")
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(final) as tmp:
        yield tmp
        if not shard_paths(tmp):
            raise StoreError(f"{final}: no patches to write")


def shard_paths(path: Path) -> list[Path]:
    """The shards of a directory: its sub-directories that are stores, in name order."""
    return sorted(p for p in path.iterdir() if (p / "meta.json").is_file()) if path.is_dir() else []


def open_store(spec: Path | str | Sequence[Path | str]) -> PatchStore:
    """A store, a directory of shards, or a list of either, as one store."""
    paths = [Path(spec)] if isinstance(spec, (str, Path)) else [Path(p) for p in spec]
    if len(paths) == 1 and (paths[0] / "meta.json").is_file():
        return PatchStore(paths[0])
    shards: list[PatchStore] = []
    for path in paths:
        if (path / "meta.json").is_file():
            shards.append(PatchStore(path))
            continue
        found = shard_paths(path)
        if not found:
            raise StoreError(f"{path}: not a patch store or a directory of shards (no meta.json); make one with "
                             "`mine-jepa extract`")
        shards.extend(PatchStore(p) for p in found)
    return ShardedPatchStore(shards, paths[0] if len(paths) == 1 else Path(",".join(str(p) for p in paths)))
