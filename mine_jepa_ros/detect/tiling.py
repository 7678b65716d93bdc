"""Sliding windows over side-scan waterfalls: whole frames and ping streams.

Edge policy: windows start every ``stride`` pixels from 0, and when the last regular window does
not reach the border, one more window is aligned to the border (start = length - window), so every
pixel is covered by at least one window. A dimension shorter than the window has no windows.

In a stream the along-track length is unknown until the stream ends: :class:`StreamingTiler`
emits each row of windows as soon as its last ping has arrived and adds the border-aligned row on
:meth:`StreamingTiler.flush`, so a stream and the same waterfall tiled as one frame give exactly
the same windows. Memory is one ring buffer of ``window`` pings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Window start offsets along one dimension (see the module's edge policy)."""
    if length < window:
        return []
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


@dataclass(frozen=True)
class Tiles:
    """A batch of windows: ``patches`` (N, window, window) and their top-left ``(row, col)`` positions."""

    patches: np.ndarray
    positions: np.ndarray  # (N, 2) int64, rows in the frame's or the stream's coordinates

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    @staticmethod
    def empty(window: int, dtype: np.dtype = np.dtype(np.float32)) -> Tiles:
        return Tiles(np.zeros((0, window, window), dtype), np.zeros((0, 2), np.int64))

    @staticmethod
    def concat(parts: list[Tiles], window: int) -> Tiles:
        if not parts:
            return Tiles.empty(window)
        return Tiles(np.concatenate([p.patches for p in parts]), np.concatenate([p.positions for p in parts]))


class WaterfallTiler:
    """Cuts a whole waterfall frame into ``window`` x ``window`` patches at ``stride``."""

    def __init__(self, window: int = 96, stride: int = 64) -> None:
        if window < 1 or not 1 <= stride <= window:
            raise ValueError(f"need window >= 1 and 1 <= stride <= window (got window {window}, stride {stride})")
        self.window = window
        self.stride = stride

    def positions(self, height: int, width: int) -> np.ndarray:
        rows = window_starts(height, self.window, self.stride)
        cols = window_starts(width, self.window, self.stride)
        if not rows or not cols:
            return np.zeros((0, 2), np.int64)
        grid = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1)
        return grid.reshape(-1, 2).astype(np.int64)

    def tile(self, image: np.ndarray, row_offset: int = 0) -> Tiles:
        """All windows of a 2-D image; positions are shifted by ``row_offset`` rows."""
        if image.ndim != 2:
            raise ValueError(f"expected a 2-D image, got shape {image.shape}")
        pos = self.positions(*image.shape)
        if len(pos) == 0:
            return Tiles.empty(self.window, image.dtype)
        view = sliding_window_view(image, (self.window, self.window))
        patches = view[pos[:, 0], pos[:, 1]]  # fancy indexing copies only the chosen windows
        shifted = pos.copy()
        shifted[:, 0] += row_offset
        return Tiles(np.ascontiguousarray(patches), shifted)


class StreamingTiler:
    """Accumulates pings (rows) into a ring buffer and emits every window exactly once.

    Rows are counted from the start of the stream. A row of windows starting at row ``s`` is
    emitted as soon as row ``s + window - 1`` has arrived; :meth:`flush` emits the border-aligned
    last row of windows. A change of ping width flushes the segment and starts a new one at the
    current row (windows never straddle two widths).
    """

    def __init__(self, window: int = 96, stride: int = 64) -> None:
        self.window = window
        self.stride = stride
        self._frame_tiler = WaterfallTiler(window, stride)
        self.width: int | None = None
        self.rows_seen = 0  # rows pushed since the stream started
        self._segment_start = 0  # first row of the current width segment
        self._next_start = 0  # next regular window row start (absolute)
        self._last_emitted: int | None = None
        self._ring = np.zeros((0, 0), np.float32)

    @property
    def buffered_bytes(self) -> int:
        return int(self._ring.nbytes)

    def _start_segment(self, width: int, dtype: np.dtype) -> None:
        self.width = width
        self._segment_start = self.rows_seen
        self._next_start = self.rows_seen
        self._last_emitted = None
        self._ring = np.zeros((self.window, width), dtype)

    def _window_row(self, start: int) -> Tiles:
        idx = np.arange(start, start + self.window) % self.window
        band = self._ring[idx]
        return self._frame_tiler.tile(band, row_offset=start)

    def push(self, rows: np.ndarray) -> Tiles:
        """Add one or more pings (shape (k, width) or (width,)); return the windows they complete."""
        rows = np.atleast_2d(rows)
        if rows.ndim != 2 or rows.shape[1] == 0:
            raise ValueError(f"expected pings of shape (k, width), got {rows.shape}")
        out: list[Tiles] = []
        if self.width != rows.shape[1]:
            if self.width is not None:
                out.append(self.flush())
            self._start_segment(rows.shape[1], rows.dtype)
        i = 0
        while i < rows.shape[0]:
            # Copy up to the row that completes the next window row (or all that is left).
            complete_at = self._next_start + self.window  # rows_seen needed
            take = min(rows.shape[0] - i, max(1, complete_at - self.rows_seen), self.window)
            chunk = rows[i : i + take]
            idx = np.arange(self.rows_seen, self.rows_seen + take) % self.window
            self._ring[idx] = chunk
            self.rows_seen += take
            i += take
            while self.rows_seen >= self._next_start + self.window:
                out.append(self._window_row(self._next_start))
                self._last_emitted = self._next_start
                self._next_start += self.stride
        return Tiles.concat(out, self.window)

    def flush(self) -> Tiles:
        """End the segment: emit the border-aligned last row of windows if it is still missing.

        The next :meth:`push` starts a new segment at the current row.
        """
        if self.width is None:
            return Tiles.empty(self.window)
        last = self.rows_seen - self.window
        tiles = Tiles.empty(self.window)
        if last >= self._segment_start and self._last_emitted != last:
            tiles = self._window_row(last)
        self.width = None
        self._ring = np.zeros((0, 0), np.float32)
        return tiles
