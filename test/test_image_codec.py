"""Image <-> numpy conversion for every supported encoding, and clear errors for bad fields."""

from __future__ import annotations

import array
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from mine_jepa_ros.io.image_codec import ImageDecodeError, decode_image, encode_compressed, encode_image
from mine_jepa_ros.io.messages import MessageFactory

FACTORY = MessageFactory.for_rosbags()
HEADER = FACTORY.header(5, "sonar")
RNG = np.random.default_rng(0)


def raw(**fields: object) -> SimpleNamespace:
    base = dict(header=HEADER, height=2, width=3, encoding="mono8", is_bigendian=0, step=3, data=bytes(6))
    base.update(fields)
    return SimpleNamespace(**base)


@pytest.mark.parametrize(
    ("pixels", "encoding", "scale"),
    [
        (RNG.integers(0, 256, (5, 7), dtype=np.uint8), "mono8", 255.0),
        (RNG.integers(0, 65536, (5, 7), dtype=np.uint16), "mono16", 65535.0),
        (RNG.random((5, 7), dtype=np.float32), "32FC1", 1.0),
    ],
)
def test_mono_round_trip(pixels: np.ndarray, encoding: str, scale: float) -> None:
    msg = encode_image(FACTORY, pixels, HEADER)
    assert msg.encoding == encoding
    decoded = decode_image(msg)
    np.testing.assert_allclose(decoded.pixels * scale, pixels.astype(np.float32), rtol=1e-6, atol=1e-3)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_colour_becomes_luminance(encoding: str) -> None:
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0 if encoding == "rgb8" else 2] = 200  # pure red in either channel order
    decoded = decode_image(encode_image(FACTORY, rgb, HEADER, encoding)).pixels
    assert decoded.shape == (4, 4)
    assert decoded.mean() == pytest.approx(0.299 * 200 / 255, abs=0.01)


def test_big_endian_mono16_and_padded_step() -> None:
    pixels = np.array([[1, 2, 65535]], dtype=np.uint16)
    data = np.zeros(8, np.uint8)
    data[:6] = np.frombuffer(pixels.astype(">u2").tobytes(), np.uint8)  # 2 bytes row padding
    msg = raw(height=1, width=3, encoding="mono16", is_bigendian=1, step=8, data=data)
    np.testing.assert_allclose(decode_image(msg).pixels * 65535, [[1, 2, 65535]])


def test_rclpy_style_array_data_is_accepted() -> None:
    msg = raw(data=array.array("B", range(6)))
    np.testing.assert_allclose(decode_image(msg).pixels * 255, [[0, 1, 2], [3, 4, 5]])


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed_round_trip(fmt: str) -> None:
    pixels = np.tile(np.arange(0, 240, 16, dtype=np.uint8), (8, 1))
    msg = encode_compressed(FACTORY, pixels, HEADER, fmt)
    decoded = decode_image(msg).pixels * 255
    np.testing.assert_allclose(decoded, pixels, atol=0 if fmt == "png" else 8)


def test_compressed_mono16_png_keeps_depth() -> None:
    pixels = np.array([[0, 1000, 65535]], dtype=np.uint16)
    np.testing.assert_allclose(decode_image(encode_compressed(FACTORY, pixels, HEADER)).pixels * 65535, pixels)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        (dict(encoding="yuv422"), "encoding"),
        (dict(encoding=None), "encoding"),
        (dict(height=0, data=b""), "height"),
        (dict(width=0, step=0, data=b""), "width"),
        (dict(step=2), "step"),
        (dict(data=bytes(5)), "data"),
        (dict(data=bytes(7)), "data"),
        (dict(height=-1), "height"),
        (dict(height=1 << 20, width=1 << 20, step=1 << 20), "height"),
    ],
)
def test_bad_fields_are_named(fields: dict[str, object], field: str) -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(raw(**fields))
    assert info.value.field == field
    assert field in str(info.value)


def test_nan_in_float_image_is_an_error() -> None:
    pixels = np.ones((2, 2), np.float32)
    pixels[1, 1] = np.nan
    with pytest.raises(ImageDecodeError, match="NaN"):
        decode_image(encode_image(FACTORY, pixels, HEADER))


def test_undecodable_compressed_data() -> None:
    msg = SimpleNamespace(header=HEADER, format="jpeg", data=b"not a jpeg at all")
    with pytest.raises(ImageDecodeError, match="data"):
        decode_image(msg)
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(SimpleNamespace(header=HEADER, format="png", data=b""))


def test_cv2_png_is_what_compressed_decoding_reads() -> None:
    ok, buf = cv2.imencode(".png", np.full((3, 3), 128, np.uint8))
    assert ok
    assert decode_image(SimpleNamespace(header=HEADER, format="png", data=buf.tobytes())).pixels.max() == pytest.approx(128 / 255)
