"""Member / non-member split of one image pool (docs/design.md), saved next to the results."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError

FORMAT = "mia_ray.split/1"


def _ids(a) -> np.ndarray:
    a = np.array(a, dtype=np.int64).reshape(-1)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Split:
    """Sample ids of the members (training set), the evaluated members and the non-members."""

    members: np.ndarray = field(repr=False)
    eval_members: np.ndarray = field(repr=False)
    nonmembers: np.ndarray = field(repr=False)
    seed: int
    pool_size: int

    def __post_init__(self):
        for name in ("members", "eval_members", "nonmembers"):
            object.__setattr__(self, name, _ids(getattr(self, name)))
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "pool_size", int(self.pool_size))

    def __repr__(self) -> str:
        return (
            f"Split(members={len(self.members)}, eval_members={len(self.eval_members)}, "
            f"nonmembers={len(self.nonmembers)}, seed={self.seed}, pool_size={self.pool_size})"
        )

    def __eq__(self, other) -> bool:
        if not isinstance(other, Split):
            return NotImplemented
        return (self.seed, self.pool_size) == (other.seed, other.pool_size) and all(
            np.array_equal(getattr(self, k), getattr(other, k))
            for k in ("members", "eval_members", "nonmembers")
        )

    __hash__ = None  # arrays: not hashable

    def check(self) -> Split:
        """Raise DataError unless ids are unique and in the pool, eval members are members, and
        no id is both a member and a non-member. Returns self."""
        for name in ("members", "eval_members", "nonmembers"):
            ids = getattr(self, name)
            if len(np.unique(ids)) != len(ids):
                raise DataError(f"split: {name} holds repeated sample ids")
            if ids.size and (ids.min() < 0 or ids.max() >= self.pool_size):
                raise DataError(f"split: {name} holds sample ids outside the pool [0, {self.pool_size})")
        both = np.intersect1d(self.members, self.nonmembers)
        if both.size:
            raise DataError(
                f"split: {both.size} sample ids are both members and non-members, e.g. {int(both[0])}"
            )
        if not np.isin(self.eval_members, self.members).all():
            raise DataError("split: some evaluation members are not members")
        return self

    def eval_ids(self) -> tuple[np.ndarray, np.ndarray]:
        """(sample ids, is_member) of the evaluation set: eval members, then non-members."""
        ids = np.concatenate([self.eval_members, self.nonmembers])
        is_member = np.concatenate(
            [np.ones(len(self.eval_members), bool), np.zeros(len(self.nonmembers), bool)]
        )
        return ids, is_member

    def rows(self) -> list[dict]:
        """One dict per member and non-member: sample_id, is_member, in_eval (for a Parquet table)."""
        in_eval = set(self.eval_members.tolist())
        rows = [{"sample_id": i, "is_member": True, "in_eval": i in in_eval} for i in self.members.tolist()]
        rows += [{"sample_id": i, "is_member": False, "in_eval": True} for i in self.nonmembers.tolist()]
        return rows

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "seed": self.seed,
            "pool_size": self.pool_size,
            "members": self.members.tolist(),
            "eval_members": self.eval_members.tolist(),
            "nonmembers": self.nonmembers.tolist(),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write JSON atomically (temp file + os.replace): a reader never sees half a split."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_dict(), f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Split:
        try:
            d = json.loads(Path(path).read_text())
            if d.get("format") != FORMAT:
                raise ValueError(f"format {d.get('format')!r} is not {FORMAT!r}")
            split = cls(**{k: d[k] for k in ("members", "eval_members", "nonmembers", "seed", "pool_size")})
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"cannot read split {path}: {e}") from e
        return split.check()


def check_fits_pool(pool_size: int, train_size: int, eval_size: int, dataset: str = "the data set",
                    key: str = "split: train_size + eval_size") -> None:
    """Members and non-members are disjoint draws from the pool: ``train_size + eval_size <= pool_size``."""
    if train_size + eval_size > pool_size:
        raise ConfigError(
            f"{key} = {train_size + eval_size} exceeds the pool of {pool_size} images of {dataset}"
        )


def make_split(
    pool_size: int, train_size: int, eval_size: int, seed: int, dataset: str = "the data set"
) -> Split:
    """Seeded split: members = first ``train_size`` of a permutation of the pool, non-members = the next
    ``eval_size``, evaluation members = a seeded subset of ``eval_size`` members."""
    for key, v, lo in (("split.train_size", train_size, 1), ("split.eval_size", eval_size, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ConfigError(f"{key} = {v!r}; allowed: an integer >= {lo}")
    if eval_size > train_size:
        raise ConfigError(
            f"split.eval_size = {eval_size} exceeds split.train_size = {train_size}; "
            "evaluation members are a subset of the members"
        )
    check_fits_pool(pool_size, train_size, eval_size, dataset)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(pool_size)
    members = perm[:train_size]
    nonmembers = perm[train_size : train_size + eval_size]
    eval_members = members[rng.permutation(train_size)[:eval_size]]
    return Split(members, eval_members, nonmembers, seed, pool_size).check()
