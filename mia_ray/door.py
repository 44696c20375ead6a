"""Everything a sweep will read, checked before Ray starts or a file is written (called by preflight).

* the image pool: every image decodes, values finite and in range, no two identical (first bad file / index
  named); a passed scan is remembered in the user's cache (``scan_cache_dir``), keyed by the files' path, size,
  mtime;
* given membership (``data.members`` / ``data.nonmembers``): both sets pass the same scan, share no
  image (content hash), share a native image shape (C, H, W), a pixel scale ([0, 1] floats beside [-1, 1]), for
  folders a file format, and for arrays a pixel dtype (uint8 beside float: the quantisation of one set only is a
  signal);
* ``model.pretrained``: exists, safetensors weights load strictly into its UNet2DModel config, sample size
  and channels fit the data; a pipeline directory's scheduler maps to a known family.

Each failure is a one-line ConfigError / DataError naming the key or file and what is allowed.
"""

from __future__ import annotations

import os

import numpy as np

from .data.base import Source
from .data.given import GivenSource, check_disjoint, open_given
from .data.validate import DIM, PoolScan, check_pool
from .errors import DataError


def scan_cache_dir(cfg=None) -> str:
    """Where passed pool scans are recorded: ``$MIA_RAY_CACHE``, else ``$XDG_CACHE_HOME/mia_ray`` (default
    ``~/.cache/mia_ray``), plus ``/pool_scans``. Not under the output or the store: nothing may be written
    there before every check (the cluster's too) has passed, and the door runs on the driver, whose cache
    this is."""
    root = os.environ.get("MIA_RAY_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "mia_ray"
    )
    return os.path.join(root, "pool_scans")


def given_membership(cfg) -> bool:
    data = cfg.data
    return bool(getattr(data, "members", None) or getattr(data, "nonmembers", None))


def open_pool(cfg) -> Source:
    """The pool a sweep reads: ``data.source`` at ``data.path``, or the given members + non-members."""
    from .data import open_source

    if given_membership(cfg):
        return open_given(cfg.data, getattr(cfg.data, "members", None), getattr(cfg.data, "nonmembers", None))
    return open_source(cfg.data)


def check_content(cfg, source: Source) -> None:
    """Scan the pool (or both given sets, then refuse an image that is both member and non-member)."""
    cache = scan_cache_dir(cfg)
    if isinstance(source, GivenSource):
        digests: list[str] = []
        shapes, scans = [], []
        for key, part in zip(("data.members", "data.nonmembers"), source.parts, strict=True):
            try:
                found = check_pool(part, cache, digests=True, duplicates="warn")  # across the sets: check_disjoint
            except ValueError as e:
                raise type(e)(str(e).replace("data.path", key, 1)) from None
            digests += found.digests
            shapes.append(found.shapes)
            scans.append(found)
        check_disjoint(source, digests)
        check_same_shapes(*shapes)
        check_same_scale(*scans)
        check_same_formats(*source.parts)
        check_same_dtypes(*source.parts)
    else:
        check_pool(source, cache)


def check_same_shapes(members: list, nonmembers: list) -> None:
    """Refuse given sets that share no native image shape (C, H, W) while one of them has a single shape: only one
    set would be resized or converted to data.resolution / data.channels, and an attack could tell the sets apart by
    that (resampling, luma) rather than by membership. Sets of many sizes each (photos) are left to the user."""
    if set(members) & set(nonmembers) or (len(members) > 1 and len(nonmembers) > 1):
        return

    def show(shapes):
        return ", ".join("x".join(map(str, s)) for s in shapes[:3]) + (", ..." if len(shapes) > 3 else "")

    raise DataError(
        f"data.nonmembers: images are {show(nonmembers)} (C x H x W) but the members are {show(members)}; allowed: "
        "members and non-members of the same native size and channels (converting one set only lets an attack tell "
        "them apart by the conversion, not by membership)"
    )


def check_same_scale(members: PoolScan, nonmembers: PoolScan) -> None:
    """Refuse given sets on two pixel scales: one set with no pixel below 0 on [-1, 1] (floats of [0, 1] stored as they
    are) beside one that reaches below -0.5, or one with no pixel above DIM (uint8 masks or 0..16 levels) beside one
    that reaches above 0. A pool gets a warning for either (validate.check_pool); between the sets the scale itself
    separates members from non-members, which an attack scores instead of membership."""
    sets = (("data.members", "members", members), ("data.nonmembers", "non-members", nonmembers))
    for (key, _, one), (_, others, other) in (sets, sets[::-1]):
        if None in (one.lo, other.lo, one.hi, other.hi):
            continue
        if one.lo >= 0 and other.lo < -0.5:
            what = f"no pixel below 0 on mia_ray's [-1, 1] scale (smallest {one.lo:.3g})"
            seen = f"reach {other.lo:.3g}"
            fix = "floats in [-1, 1] (store 2x - 1 of images in [0, 1])"
        elif one.hi <= DIM and other.hi > 0:
            what = f"no pixel above {DIM:g} on mia_ray's [-1, 1] scale (largest {one.hi:.3g})"
            seen = f"reach {other.hi:.3g}"
            fix = "uint8 scaled to 0..255 (not masks of 0..1 or levels of 0..16)"
        else:
            continue
        raise DataError(
            f"{key}: {what}, but the {others} {seen}; allowed: both sets on one scale, {fix} (a set "
            "on another scale lets an attack tell them apart by the scale, not by membership)"
        )


FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def check_same_formats(members: Source, nonmembers: Source) -> None:
    """Refuse given folders whose files share no format (all PNG beside all JPEG): JPEG's compression artifacts on one
    set only are a signal an attack can score instead of membership."""
    kinds = [sorted({FORMATS.get(os.path.splitext(f)[1].lower(), "?") for f in getattr(part, "files", [])})
             for part in (members, nonmembers)]
    if members.name != "folder" or nonmembers.name != "folder" or set(kinds[0]) & set(kinds[1]):
        return
    raise DataError(
        f"data.nonmembers: images are {'/'.join(kinds[1])} files but the members are {'/'.join(kinds[0])} files; "
        "allowed: members and non-members stored in the same format (compression artifacts on one set only let an "
        "attack tell them apart by the format, not by membership)"
    )


def stored_as(part: Source) -> str | None:
    """How a set's pixels are stored, as far as an attack could tell from the values read: ``uint8`` (256 levels),
    ``float16``, ``float32 or wider`` (float64 is read as float32, on the same grid), ``encoded image bytes``
    (Parquet PNG / JPEG cells); None where the source does not say (a folder: its formats are compared)."""
    if getattr(part, "kind", None) in ("bytes", "struct"):
        return "encoded image bytes"
    dtype = getattr(part, "dtype", None)
    if dtype is None:
        return None
    dtype = np.dtype(dtype)
    return "float32 or wider" if dtype.kind == "f" and dtype.itemsize >= 4 else dtype.name


def check_same_dtypes(members: Source, nonmembers: Source) -> None:
    """Refuse given arrays stored differently (members float32 beside non-members uint8): only the uint8 set lies on
    a grid of 256 levels, a signal an attack can score instead of membership (as JPEG beside PNG)."""
    have = stored_as(members), stored_as(nonmembers)
    if None in have or have[0] == have[1]:
        return
    raise DataError(
        f"data.nonmembers: pixels are stored as {have[1]} but the members' as {have[0]}; allowed: members and "
        "non-members stored alike (convert one set: the quantisation of one set only lets an attack tell them apart "
        "by the storage, not by membership)"
    )


def check_model(cfg):
    """The pretrained checkpoint fits the data; returns its pipeline's FamilyConfig (None otherwise)."""
    if not cfg.model.pretrained:
        return None
    from .checkpoint import check_checkpoint

    families = list(getattr(cfg, "families", []) or [])
    family = families[0] if len(families) == 1 else None
    return check_checkpoint(cfg.model.pretrained, cfg.data.channels, cfg.data.resolution, family)


def check_inputs(cfg, source: Source) -> None:
    """The door: the checkpoint first (cheap to refuse), then the pool's content."""
    check_model(cfg)
    check_content(cfg, source)


__all__ = ["check_content", "check_inputs", "check_model", "check_same_dtypes", "check_same_formats",
           "check_same_scale", "check_same_shapes", "given_membership", "open_pool", "scan_cache_dir", "stored_as"]
