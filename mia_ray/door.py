"""Everything a sweep will read, checked before Ray starts or a file is written (called by preflight).

* the image pool: every image decodes, values finite and in range (first bad file / index named); a
  passed scan is remembered in the user's cache (``scan_cache_dir``), keyed by the files' path, size, mtime;
* given membership (``data.members`` / ``data.nonmembers``): both sets pass the same scan and share no
  image (content hash);
* ``model.pretrained``: exists, safetensors weights load strictly into its UNet2DModel config, sample size
  and channels fit the data; a pipeline directory's scheduler maps to a known family.

Each failure is a one-line ConfigError / DataError naming the key or file and what is allowed.
"""

from __future__ import annotations

import os

from .data.base import Source
from .data.given import GivenSource, check_disjoint, open_given
from .data.validate import check_pool


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
        for key, part in zip(("data.members", "data.nonmembers"), source.parts, strict=True):
            try:
                digests += check_pool(part, cache, digests=True).digests
            except ValueError as e:
                raise type(e)(str(e).replace("data.path", key, 1)) from None
        check_disjoint(source, digests)
    else:
        check_pool(source, cache)


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


__all__ = ["check_content", "check_inputs", "check_model", "given_membership", "open_pool", "scan_cache_dir"]
