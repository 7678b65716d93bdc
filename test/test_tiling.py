"""Windows over frames and ping streams: edge policy, equivalence, bounded memory."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mine_jepa_ros.detect.tiling import StreamingTiler, Tiles, WaterfallTiler, window_starts


def test_window_starts_edge_policy() -> None:
    assert window_starts(95, 96, 64) == []
    assert window_starts(96, 96, 64) == [0]
    assert window_starts(160, 96, 64) == [0, 64]
    assert window_starts(200, 96, 64) == [0, 64, 104]  # last window aligned to the border


@given(length=st.integers(96, 3000), stride=st.integers(1, 96))
def test_every_pixel_is_covered(length: int, stride: int) -> None:
    covered = np.zeros(length, bool)
    starts = window_starts(length, 96, stride)
    for s in starts:
        covered[s : s + 96] = True
    assert covered.all()
    assert starts == sorted(set(starts))


def test_frame_tiles_are_the_image_slices() -> None:
    img = np.arange(300 * 250, dtype=np.float32).reshape(300, 250)
    tiles = WaterfallTiler().tile(img, row_offset=1000)
    for patch, (r, c) in zip(tiles.patches, tiles.positions):
        np.testing.assert_array_equal(patch, img[r - 1000 : r - 1000 + 96, c : c + 96])
    assert len(WaterfallTiler().tile(np.zeros((50, 500), np.float32))) == 0


def _stream(img: np.ndarray, chunks: list[int]) -> Tiles:
    tiler = StreamingTiler()
    parts, i, k = [], 0, 0
    while i < len(img):
        n = chunks[k % len(chunks)]
        parts.append(tiler.push(img[i : i + n]))
        i, k = i + n, k + 1
    parts.append(tiler.flush())
    return Tiles.concat(parts, 96)


@settings(max_examples=40, deadline=None)
@given(height=st.integers(1, 700), width=st.integers(96, 260), chunks=st.lists(st.integers(1, 200), min_size=1, max_size=5))
def test_stream_equals_frame(height: int, width: int, chunks: list[int]) -> None:
    img = np.random.default_rng(height * width).random((height, width), dtype=np.float32)
    frame = WaterfallTiler().tile(img)
    stream = _stream(img, chunks)
    np.testing.assert_array_equal(stream.positions, frame.positions)
    np.testing.assert_array_equal(stream.patches, frame.patches)


def test_each_window_once_as_soon_as_its_last_ping_arrives() -> None:
    tiler = StreamingTiler()
    row = np.ones((1, 200), np.float32)
    emitted_at = {}
    for i in range(300):
        out = tiler.push(row * i)
        for r in set(out.positions[:, 0].tolist()):
            assert r not in emitted_at
            emitted_at[r] = i
    assert emitted_at == {0: 95, 64: 159, 128: 223, 192: 287}
    assert set(tiler.flush().positions[:, 0].tolist()) == {300 - 96}


def test_memory_is_bounded_by_one_window_of_pings() -> None:
    tiler = StreamingTiler()
    ping = np.zeros((1, 2048), np.float32)
    for _ in range(2000):
        tiler.push(ping)
    assert tiler.buffered_bytes == 96 * 2048 * 4


def test_width_change_starts_a_new_segment() -> None:
    tiler = StreamingTiler()
    first = tiler.push(np.zeros((150, 200), np.float32))
    second = tiler.push(np.zeros((100, 300), np.float32))
    rows = sorted(set(np.concatenate([first.positions[:, 0], second.positions[:, 0]]).tolist()))
    assert rows == [0, 54, 150]  # 54: the border-aligned flush of the first segment; 150: the new one


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError):
        WaterfallTiler().tile(np.zeros((100, 100, 3), np.float32))
    with pytest.raises(ValueError, match="stride"):
        WaterfallTiler(window=96, stride=97)  # gaps: not every pixel covered
    with pytest.raises(ValueError):
        StreamingTiler().push(np.zeros((1, 0), np.float32))
