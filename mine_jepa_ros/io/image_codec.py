"""``sensor_msgs/Image`` and ``CompressedImage`` <-> numpy, without cv_bridge.

Duck-typed: works on rclpy messages and on rosbags dataclasses alike. Decoding validates every
field before touching the pixel data and raises :class:`ImageDecodeError` naming the field, so a
caller can skip the message, count it and go on.

Decoded images are single-channel float32 intensity on a common scale: mono8 / 255,
mono16 / 65535, 32FC1 as is (taken to be linear intensity in 0..1), colour images converted to
luminance / 255.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

# Compressed images claiming more pixels than this are refused by OpenCV before it allocates.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(64 * 1024 * 1024))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from mine_jepa_ros.errors import InputError
from mine_jepa_ros.io.messages import MessageFactory

# encoding -> (numpy dtype, channels, full-scale value used to normalise to 0..1)
ENCODINGS: dict[str, tuple[np.dtype[Any], int, float]] = {
    "mono8": (np.dtype(np.uint8), 1, 255.0),
    "8UC1": (np.dtype(np.uint8), 1, 255.0),
    "mono16": (np.dtype(np.uint16), 1, 65535.0),
    "16UC1": (np.dtype(np.uint16), 1, 65535.0),
    "32FC1": (np.dtype(np.float32), 1, 1.0),
    "rgb8": (np.dtype(np.uint8), 3, 255.0),
    "bgr8": (np.dtype(np.uint8), 3, 255.0),
    "rgba8": (np.dtype(np.uint8), 4, 255.0),
    "bgra8": (np.dtype(np.uint8), 4, 255.0),
}

MAX_PIXELS = 64 * 1024 * 1024
"""Largest image accepted (pixels); larger claims are rejected before any allocation."""


class ImageDecodeError(InputError):
    """A message that cannot be turned into an image; ``field`` names the offending field."""


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image: float32 intensity (H, W) in 0..1 plus where it came from."""

    pixels: np.ndarray
    encoding: str


def _as_bytes(data: Any) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype == np.uint8 else data.astype(np.uint8).reshape(-1)
    try:
        return np.frombuffer(memoryview(data), dtype=np.uint8)
    except TypeError:
        try:
            return np.asarray(data, dtype=np.uint8).reshape(-1)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ImageDecodeError("data", f"not a byte sequence ({type(data).__name__})") from exc


def _int_field(msg: Any, name: str) -> int:
    value = getattr(msg, name, None)
    if value is None:
        raise ImageDecodeError(name, "missing")
    try:
        as_int = int(value)
    except (TypeError, ValueError) as exc:
        raise ImageDecodeError(name, f"not an integer ({value!r})") from exc
    if as_int < 0:
        raise ImageDecodeError(name, f"negative ({as_int})")
    return as_int


def is_compressed(msg: Any) -> bool:
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def decode_image(msg: Any) -> DecodedImage:
    """Decode an ``Image`` or ``CompressedImage`` message; raises :class:`ImageDecodeError`."""
    if is_compressed(msg):
        return _decode_compressed(msg)
    return _decode_raw(msg)


def to_unit_intensity(values: np.ndarray, full_scale: float) -> np.ndarray:
    """``values / full_scale`` as float32, computed the one way every input path shares (so an Image
    row and the same samples from a sonar driver give bit-identical pixels)."""
    out = values.astype(np.float32)
    if full_scale != 1.0:
        out *= np.float32(1.0 / full_scale)
    return out


def unit_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Intensities 0..1 as uint8, rounded (the inverse of :func:`to_unit_intensity` at full scale 255:
    a mono8 image written from them decodes to the nearest value)."""
    return (np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _finish(pixels: np.ndarray, full_scale: float, encoding: str) -> DecodedImage:
    if pixels.ndim == 3:
        order = cv2.COLOR_RGB2GRAY if encoding.startswith("rgb") else cv2.COLOR_BGR2GRAY
        if pixels.shape[2] == 4:
            order = cv2.COLOR_RGBA2GRAY if encoding.startswith("rgb") else cv2.COLOR_BGRA2GRAY
        pixels = cv2.cvtColor(np.ascontiguousarray(pixels), order)
    out = to_unit_intensity(pixels, full_scale)
    if full_scale == 1.0 and not np.isfinite(out).all():
        bad = int((~np.isfinite(out)).sum())
        raise ImageDecodeError("data", f"{bad} NaN/inf value(s) in a float image")
    return DecodedImage(pixels=out, encoding=encoding)


def _decode_raw(msg: Any) -> DecodedImage:
    encoding = getattr(msg, "encoding", None)
    if not isinstance(encoding, str):
        raise ImageDecodeError("encoding", "missing or not a string")
    if encoding not in ENCODINGS:
        raise ImageDecodeError("encoding", f"unsupported {encoding!r}; expected one of {sorted(ENCODINGS)}")
    dtype, channels, full_scale = ENCODINGS[encoding]
    height, width, step = _int_field(msg, "height"), _int_field(msg, "width"), _int_field(msg, "step")
    if height == 0 or width == 0:
        raise ImageDecodeError("height" if height == 0 else "width", f"zero-size image ({height}x{width})")
    if height * width > MAX_PIXELS:
        raise ImageDecodeError("height", f"{height}x{width} exceeds the {MAX_PIXELS}-pixel limit")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageDecodeError("step", f"{step} is less than width*bytes_per_pixel = {row_bytes}")
    data = _as_bytes(getattr(msg, "data", b""))
    if data.size != step * height:
        raise ImageDecodeError("data", f"length {data.size} != step*height = {step}*{height} = {step * height}")
    rows = data.reshape(height, step)[:, :row_bytes]
    big_endian = bool(getattr(msg, "is_bigendian", 0))
    typed = np.ascontiguousarray(rows).view(dtype.newbyteorder(">" if big_endian else "<"))
    pixels = typed.reshape(height, width, channels) if channels > 1 else typed.reshape(height, width)
    return _finish(pixels.astype(dtype, copy=False), full_scale, encoding)


def _decode_compressed(msg: Any) -> DecodedImage:
    fmt = getattr(msg, "format", "")
    data = _as_bytes(getattr(msg, "data", b""))
    if data.size == 0:
        raise ImageDecodeError("data", "empty compressed image")
    pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.size == 0:
        raise ImageDecodeError("data", f"not decodable as an image (format {fmt!r})")
    if pixels.dtype == np.uint8:
        full_scale = 255.0
    elif pixels.dtype == np.uint16:
        full_scale = 65535.0
    else:
        raise ImageDecodeError("data", f"unsupported compressed pixel type {pixels.dtype}")
    # cv2 decodes colour as BGR(A); grayscale comes back 2-D.
    return _finish(pixels, full_scale, "bgr8" if pixels.ndim == 3 else f"compressed:{fmt}")


def encode_image(
    factory: MessageFactory, pixels: np.ndarray, header: Any, encoding: str | None = None
) -> Any:
    """A ``sensor_msgs/Image`` from a numpy array (uint8 -> mono8, uint16 -> mono16, float32 -> 32FC1,
    (H, W, 3) uint8 -> ``encoding`` rgb8 or bgr8)."""
    if encoding is None:
        encoding = {np.dtype(np.uint8): "mono8", np.dtype(np.uint16): "mono16", np.dtype(np.float32): "32FC1"}.get(
            pixels.dtype, ""
        )
        if pixels.ndim == 3:
            encoding = "rgb8"
    if encoding not in ENCODINGS:
        raise ValueError(f"cannot encode dtype {pixels.dtype} with shape {pixels.shape} as {encoding!r}")
    dtype, channels, _ = ENCODINGS[encoding]
    if pixels.dtype != dtype or (pixels.ndim == 3) != (channels > 1):
        raise ValueError(f"array of {pixels.dtype} {pixels.shape} does not match encoding {encoding}")
    arr = np.ascontiguousarray(pixels.astype(dtype.newbyteorder("<"), copy=False))
    height, width = arr.shape[:2]
    return factory.make(
        "sensor_msgs/msg/Image",
        header=header,
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=width * channels * dtype.itemsize,
        data=factory.byte_array(arr),
    )


def encode_compressed(factory: MessageFactory, pixels: np.ndarray, header: Any, fmt: str = "png") -> Any:
    """A ``sensor_msgs/CompressedImage`` (png or jpeg) from a uint8/uint16 array."""
    ok, buf = cv2.imencode(f".{fmt}", pixels)
    if not ok:
        raise ValueError(f"cv2 could not encode a {pixels.dtype} {pixels.shape} array as {fmt}")
    return factory.make("sensor_msgs/msg/CompressedImage", header=header, format=fmt, data=factory.byte_array(buf))
