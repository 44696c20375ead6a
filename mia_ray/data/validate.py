"""Validate a whole image pool at the door: every image decodes, values finite and in range, no two identical.

The pool is streamed chunk by chunk (memory stays at one chunk) through the source's own reader, so the
door applies exactly the checks a trial's ``load`` applies; the first bad image is named by its file,
row or index. A successful scan is remembered in a small JSON file keyed by the pool's fingerprint
(paths, sizes and modification times of its files, key, channels): a second sweep over an unchanged pool
does not read it again.

Measured on this 2-core VM (warm page cache), 10k x 3 x 64 x 64 pools: a float32 .npy (469 MiB) scans in
0.1 s, a uint8 one (117 MiB) in 0.3 s, 10k PNG files in 3.6 s, plus 0.4 s for hashing every image (the
duplicate check; measured again: float32 0.54 s, uint8 0.56 s in all); a cache hit costs 0.2 ms (one stat) for a
.npy and 0.7 s for the PNG folder (listing + 10k stats, which opening the source does anyway). For
comparison a trial's load of 2000 of those images takes 0.1-0.4 s (.npy) and 1.9 s (PNG): the first scan
costs about one sweep's worth of reading, later sweeps over the same pool nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .base import Source

FORMAT = "mia_ray.pool_scan/3"  # /2 adds "lo", /3 "duplicate", "shapes", "hi": an older record is scanned again once
log = logging.getLogger("mia_ray")
DIM = -0.8  # the brightest pixel at most uint8 25: sklearn's digits stored as their 0..16 are -0.87 at most


@dataclass(frozen=True)
class PoolScan:
    """What a scan found: the pool size and (when asked) one content digest per image."""

    n: int
    digests: list[str] | None = None  # blake2b-128 hex of each image's native float32 pixels and shape
    lo: float | None = None  # the smallest pixel of the pool on the [-1, 1] scale (None: not known)
    duplicate: tuple[int, int] | None = None  # (i, j): the first image j identical to an earlier image i
    n_duplicates: int = 0  # images identical to an earlier one
    shapes: list[tuple[int, ...]] | None = None  # the distinct native (C, H, W) of the images, sorted
    hi: float | None = None  # the largest pixel of the pool on the [-1, 1] scale (None: not known)


def digest(img: np.ndarray) -> str:
    """Content hash of one decoded image (native size, float32 in [-1, 1])."""
    img = np.ascontiguousarray(img, dtype=np.float32)
    h = hashlib.blake2b(str(img.shape).encode(), digest_size=16)
    h.update(img.tobytes())
    return h.hexdigest()


def fingerprint(source: Source) -> str | None:
    """sha256 over the source's files (path, size, mtime), key and channels; None for pools without files."""
    files = source.files_to_fingerprint()
    if not files:
        return None
    stats = []
    for p in files:
        st = os.stat(p)
        stats.append([str(p), st.st_size, st.st_mtime_ns])
    blob = json.dumps(
        {"source": source.name, "where": source.where(), "channels": source.cfg.channels, "files": stats},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def scan(source: Source, digests: bool = False) -> PoolScan:
    """Read every image of ``source`` once, in id order; raise DataError naming the first bad one. Every image
    is hashed (the first duplicate is recorded); ``digests`` keeps the hashes."""
    found: list[str] = []
    first: dict[str, int] = {}
    duplicate, n_duplicates = None, 0
    shapes: set[tuple[int, ...]] = set()
    lo = hi = None
    for ids in source.scan_chunks():
        images = source._read(ids)  # noqa: SLF001  (the door checks what trials will read, natively)
        for img in images:
            d = digest(img)
            if first.setdefault(d, len(found)) != len(found):
                duplicate = duplicate or (first[d], len(found))
                n_duplicates += 1
            found.append(d)
            shapes.add(tuple(int(v) for v in np.shape(img)))
        for img in images if isinstance(images, list) else [images]:
            if np.size(img):
                lo = float(np.min(img)) if lo is None else min(lo, float(np.min(img)))
                hi = float(np.max(img)) if hi is None else max(hi, float(np.max(img)))
    return PoolScan(len(source), found if digests else None, lo, duplicate, n_duplicates, sorted(shapes), hi)


def _cache_file(cache_dir: str, fp: str) -> Path:
    return Path(cache_dir) / f"{fp}.json"


def cached_scan(source: Source, cache_dir: str | None, digests: bool = False) -> PoolScan:
    """``scan`` unless an earlier successful scan of the unchanged pool is recorded under ``cache_dir``.

    The record is written atomically only after a scan passed; ``cache_dir`` None (or a URI) disables it.
    """
    fp = fingerprint(source) if cache_dir and "://" not in cache_dir else None
    if fp is not None:
        try:
            d = json.loads(_cache_file(cache_dir, fp).read_text())
            if d.get("format") == FORMAT and d.get("n") == len(source) and (not digests or d.get("digests")):
                dup = d.get("duplicate")
                return PoolScan(d["n"], d.get("digests"), d.get("lo"), tuple(dup) if dup else None,
                                int(d.get("n_duplicates") or 0), [tuple(x) for x in d.get("shapes") or []],
                                d.get("hi"))
        except (OSError, ValueError, TypeError):
            pass
    result = scan(source, digests)
    if fp is not None:
        _write_json(_cache_file(cache_dir, fp), {"format": FORMAT, "where": source.where(), "n": result.n,
                                                 "digests": result.digests, "lo": result.lo,
                                                 "duplicate": result.duplicate,
                                                 "n_duplicates": result.n_duplicates, "shapes": result.shapes,
                                                 "hi": result.hi})
    return result


def _write_json(path: Path, d: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(d, f)
        os.replace(tmp, path)
    except OSError:  # a cache: a read-only store only costs the next sweep a scan
        pass


def check_pool(source: Source, cache_dir: str | None = None, digests: bool = False,
               duplicates: str = "refuse") -> PoolScan:
    """The door's pool check: one line naming ``data.path`` and the first bad image on failure. Identical images
    are refused in a pool the split is drawn from (``duplicates="refuse"``: the copies could become a member and a
    non-member) and only warned about within one given set (``"warn"``: a copy is in the same class either way,
    and real training sets hold a few exact copies)."""
    try:
        result = cached_scan(source, cache_dir, digests)
    except DataError as e:
        msg = str(e)
        raise DataError(msg if msg.startswith("data.") else f"data.path: {msg}") from None
    if result.duplicate is not None:  # drawn, the two copies could be a member and a non-member (split ids differ)
        i, j = result.duplicate
        more = f" ({result.n_duplicates} images of the pool repeat an earlier one)" if result.n_duplicates > 1 else ""
        what = f"image {j} ({source.image_name(j)}) is identical to image {i} ({source.image_name(i)}){more}"
        if duplicates == "warn":
            log.warning("%s: %s; each copy is scored as a sample of its own", source.where(), what)
        else:
            raise DataError(f"data.path: {what}; allowed: distinct images (a drawn split can make one copy a member "
                            "and another a non-member: delete the copies)")
    if result.hi is not None and result.hi <= DIM:  # 0/1 masks or 0..16 intensities stored as uint8: near black
        log.warning("%s: no pixel of the pool is above %.3g on mia_ray's [-1, 1] scale (uint8 %d): if these are uint8 "
                    "images of 0..1 or 0..16 (masks, intensity levels), store them scaled to 0..255 (uint8 is read as "
                    "0..255)", source.where(), result.hi, round((result.hi + 1) * 127.5))
    if result.lo is not None and result.lo >= 0:  # a pool of real photos on [-1, 1] has dark pixels below 0
        log.warning("%s: no pixel of the pool is below 0 on mia_ray's [-1, 1] scale (smallest %.3g): if these are "
                    "float images in [0, 1], store 2x - 1 (floats are read as [-1, 1] as they are; uint8 is rescaled "
                    "from 0..255 already)", source.where(), result.lo)
    return result


__all__ = ["PoolScan", "check_pool", "cached_scan", "digest", "fingerprint", "scan"]
