"""Pixel helpers shared by all sources: layout detection, scaling to [-1, 1], channels, resizing.

Every source turns what it reads into float32 arrays ``[n, C, H, W]`` in [-1, 1] at its native size
(:func:`to_unit`, :func:`as_nchw`); :func:`fit` then converts channels and resizes to the configured
resolution. Non-square images are center-cropped to a square before resizing (never stretched).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..errors import DataError

ALLOWED_DTYPES = "uint8 (0..255) or float (already in [-1, 1])"
ALLOWED_LAYOUTS = "NHW, NCHW or NHWC with 1 or 3 channels"
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, as PIL's convert("L")


def check_dtype(dtype: np.dtype, where: str) -> None:
    """Raise unless ``dtype`` is uint8 or floating."""
    dtype = np.dtype(dtype)
    if dtype != np.uint8 and dtype.kind != "f":
        raise DataError(f"{where}: dtype {dtype} is not supported; allowed: {ALLOWED_DTYPES}")


def layout_of(shape: tuple[int, ...], where: str) -> str:
    """'NHW', 'NCHW' or 'NHWC' for an array of images of this shape (first axis = images).

    A 4-d shape is NCHW when axis 1 has size 1 or 3, NHWC when axis 3 has; if both do, the reading
    whose spatial axes are square wins (NCHW on a tie). Images of 0 rows or columns are refused: resized,
    they became blank images (uninitialised memory, in fact), every member identical to every non-member.
    """
    layout = None
    if len(shape) == 3:
        layout = "NHW"
    elif len(shape) == 4:
        chw, hwc = shape[1] in (1, 3), shape[3] in (1, 3)
        if chw and hwc:
            layout = "NHWC" if shape[1] == shape[2] and shape[2] != shape[3] else "NCHW"
        elif chw:
            layout = "NCHW"
        elif hwc:
            layout = "NHWC"
    if layout is None:
        raise DataError(f"{where}: cannot read image array of shape {tuple(shape)}; allowed: {ALLOWED_LAYOUTS}")
    hw = {"NHW": shape[1:3], "NCHW": shape[2:4], "NHWC": shape[1:3]}[layout]
    if min(hw) < 1:
        raise DataError(f"{where}: image array of shape {tuple(shape)} ({layout}) holds images of {hw[0]}x{hw[1]} "
                        f"pixels; allowed: images of at least 1x1 pixels, {ALLOWED_LAYOUTS}")
    return layout


def array_header(shape: tuple[int, ...], dtype, where: str) -> tuple[np.dtype, str, int]:
    """(dtype as stored, layout, image count) of an image array file's header, refused as the door refuses it:
    an unsupported dtype or layout, or no images."""
    check_dtype(dtype, where)
    layout = layout_of(shape, where)
    if int(shape[0]) == 0:
        raise DataError(f"data.path: {where} holds no images")
    return np.dtype(dtype), layout, int(shape[0])


def as_nchw(a: np.ndarray, layout: str) -> np.ndarray:
    """View an array in ``layout`` as NCHW."""
    if layout == "NHW":
        return a[:, None]
    if layout == "NHWC":
        return a.transpose(0, 3, 1, 2)
    return a


def to_unit(a: np.ndarray, where: str, ids=None) -> np.ndarray:
    """uint8 0..255 -> float32 [-1, 1]; float arrays must already be finite and in [-1, 1].

    ``ids`` (the sample ids of the rows of ``a``) lets an error name the first bad image.
    """
    check_dtype(a.dtype, where)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 127.5 - 1.0
    a = np.asarray(a, dtype=np.float32)
    finite = np.isfinite(a)
    if not finite.all():
        at = _first_bad(~finite, ids)
        raise DataError(f"{where}{at}: contains NaN or inf; allowed: finite values in [-1, 1] (or uint8)")
    lo, hi = float(a.min(initial=0.0)), float(a.max(initial=0.0))
    if lo < -1.0 - 1e-5 or hi > 1.0 + 1e-5:
        at = _first_bad((a < -1.0 - 1e-5) | (a > 1.0 + 1e-5), ids)
        raise DataError(
            f"{where}{at}: float values span [{lo:g}, {hi:g}]; allowed: floats in [-1, 1] or uint8 0..255"
        )
    return np.clip(a, -1.0, 1.0)


def _first_bad(bad: np.ndarray, ids) -> str:
    """' image ID' of the first row of ``bad`` with a True (empty without ids)."""
    if ids is None or bad.ndim < 2:
        return ""
    row = int(np.flatnonzero(bad.reshape(len(bad), -1).any(1))[0])
    return f" image {int(np.asarray(ids)[row])}"


def convert_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """[n, C, H, W] with C in {1, 3} -> [n, channels, H, W] (gray repeated; RGB -> luma)."""
    c = x.shape[1]
    if c == channels:
        return x
    if c == 1:
        return np.repeat(x, channels, axis=1)
    return np.tensordot(x, _LUMA, axes=([1], [0]))[:, None].astype(np.float32)


def resize(x: np.ndarray, resolution: int) -> np.ndarray:
    """Center-crop [n, C, H, W] to a square, then resize (bilinear up, Lanczos down) with PIL."""
    n, c, h, w = x.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    x = x[:, :, top : top + s, left : left + s]
    if s == resolution:
        return x
    flt = Image.Resampling.BILINEAR if resolution > s else Image.Resampling.LANCZOS
    out = np.empty((n, c, resolution, resolution), dtype=np.float32)
    for i in range(n):
        for j in range(c):
            plane = Image.fromarray(np.ascontiguousarray(x[i, j], dtype=np.float32))
            out[i, j] = np.asarray(plane.resize((resolution, resolution), flt))
    return np.clip(out, -1.0, 1.0)  # Lanczos may overshoot


def fit(x: np.ndarray, channels: int, resolution: int) -> np.ndarray:
    """float32 [n, C, H, W] in [-1, 1] -> contiguous [n, channels, resolution, resolution]."""
    if channels < x.shape[1]:  # convert first: fewer planes to resize
        x = resize(convert_channels(x, channels), resolution)
    else:
        x = convert_channels(resize(x, resolution), channels)
    return np.ascontiguousarray(x, dtype=np.float32)


def decode_image(data, channels: int, where: str) -> np.ndarray:
    """A PNG/JPEG file path or file object -> float32 [C, H, W] in [-1, 1]."""
    try:
        with Image.open(data) as img:
            mode = img.mode
            if not mode.startswith(("I", "F")):
                arr = np.asarray(img.convert("L" if channels == 1 else "RGB"))
    except Exception as e:  # PIL raises many types for bad files
        reason = " ".join(str(e).split()).replace(repr(data), "of these bytes")  # not '<_io.BytesIO object at 0x7f..>'
        raise DataError(
            f"cannot read image {where}: {type(e).__name__}: {reason}; allowed: PNG or JPEG"
        ) from e
    if mode.startswith(("I", "F")):  # PIL's convert("L") clips 16-bit / float pixels to 0..255: mostly white
        raise DataError(f"cannot read image {where}: mode {mode} (16-bit integer or float pixels); allowed: 8-bit "
                        "PNG or JPEG (grayscale, RGB, RGBA or palette)")
    return to_unit(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1), where)
