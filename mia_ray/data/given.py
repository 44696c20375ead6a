"""Given membership: the user names the members (the model's training images) and the non-members.

Both sets are read by the same registered source (``data.source``: two folders, two .npy/.npz files,
...). They form one pool: sample ids ``0 .. m-1`` are the members, ``m .. m+n-1`` the non-members, so a
:class:`~mia_ray.data.split.Split` records the given membership like a drawn one.

>>> pool = open_given(DataConfig(source="npz", resolution=32, channels=3), "train.npy", "test.npy")
>>> split = given_split(pool, eval_size=1000, seed=0)   # all members; eval_size of each class scored
"""

from __future__ import annotations

import numpy as np

from ..config import DataConfig
from ..errors import ConfigError, DataError
from .base import Source
from .registry import SOURCES
from .split import Split

KEYS = ("data.members", "data.nonmembers")


class GivenSource(Source):
    """Members then non-members, each read by its own source of the same kind."""

    name = "given"
    needs_path = False

    def __init__(self, cfg: DataConfig, members: Source, nonmembers: Source):
        super().__init__(cfg)
        self.parts = (members, nonmembers)
        self.n_members = len(members)

    def __len__(self) -> int:
        return self.n_members + len(self.parts[1])

    def is_member(self) -> np.ndarray:
        return np.arange(len(self)) < self.n_members

    def _read(self, ids: np.ndarray) -> np.ndarray | list[np.ndarray]:
        m = ids < self.n_members
        out: list = [None] * len(ids)
        for part, sel, offset in ((self.parts[0], m, 0), (self.parts[1], ~m, self.n_members)):
            if sel.any():
                for pos, img in zip(np.flatnonzero(sel), part._read(ids[sel] - offset), strict=True):
                    out[pos] = img
        if len({img.shape for img in out}) == 1:
            return np.stack(out)
        return out

    def scan_chunks(self, size: int = 256):
        for part, offset in ((self.parts[0], 0), (self.parts[1], self.n_members)):
            for ids in part.scan_chunks(size):
                yield ids + offset

    def files_to_fingerprint(self) -> list:
        return []  # each part is scanned (and cached) on its own: see mia_ray.door

    def where(self) -> str:
        return f"members {self.parts[0].where()} + non-members {self.parts[1].where()}"


def open_given(cfg: DataConfig, members: str | None, nonmembers: str | None) -> GivenSource:
    """The pool of given members and non-members, both read by source ``cfg.source`` (``cfg.path`` unused)."""
    if cfg.path:
        raise ConfigError(
            f"data.path = {cfg.path!r} cannot be combined with data.members / data.nonmembers; "
            "allowed: data.path (a drawn split) or both data.members and data.nonmembers (given membership)"
        )
    parts = []
    for key, path, own_key in zip(KEYS, (members, nonmembers), (cfg.members_key, cfg.nonmembers_key), strict=True):
        if not path:
            raise ConfigError(f"{key} is required with given membership; allowed: a path read by data.source")
        try:
            one = DataConfig(source=cfg.source, path=str(path), resolution=cfg.resolution, channels=cfg.channels,
                             key=own_key if own_key is not None else cfg.key)
            parts.append(SOURCES.get(cfg.source, key="data.source")(one))
        except (ConfigError, DataError) as e:  # a message naming only the file ("x.npy: ...") named neither set
            msg = str(e)
            if own_key is not None:  # the set's own key was read, not data.key
                msg = msg.replace("data.key", f"{key}_key", 1)
            kind = type(e)
            raise kind(msg.replace("data.path", key, 1) if msg.startswith("data.") else f"{key}: {msg}") from None
    return GivenSource(cfg, *parts)


def given_split(pool: GivenSource, eval_size: int, seed: int) -> Split:
    """Members = every given member; scored: a seeded ``eval_size`` of the members and of the non-members."""
    m, n = pool.n_members, len(pool) - pool.n_members
    if isinstance(eval_size, bool) or not isinstance(eval_size, (int, np.integer)) or not 1 <= eval_size <= min(m, n):
        raise ConfigError(
            f"eval_size = {eval_size!r}; allowed: 1..{min(m, n)} (the given {m} members and {n} non-members)"
        )
    rng = np.random.default_rng(seed)
    members = np.arange(m)
    eval_members = np.sort(rng.permutation(m)[:eval_size])
    nonmembers = m + np.sort(rng.permutation(n)[:eval_size])
    return Split(members, eval_members, nonmembers, seed, m + n).check()


def check_disjoint(pool: GivenSource, digests: list[str]) -> None:
    """Refuse (one line) a non-member image identical in content to a member image."""
    first = {}
    for i, d in enumerate(digests[: pool.n_members]):
        first.setdefault(d, i)
    for j, d in enumerate(digests[pool.n_members :]):
        if d in first:
            i = first[d]
            raise DataError(
                f"data.nonmembers: image {j} ({_name(pool.parts[1], j)}) is identical to member image {i} "
                f"({_name(pool.parts[0], i)}); allowed: members and non-members with no image in common"
            )


def _name(source: Source, i: int) -> str:
    return source.image_name(i)


__all__ = ["GivenSource", "check_disjoint", "given_split", "open_given"]
