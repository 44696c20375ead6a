"""``folder``: PNG/JPEG files under a folder (recursive), ids in sorted relative-path order."""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .base import Source
from .pixels import decode_image
from .registry import register_source

SUFFIXES = (".png", ".jpg", ".jpeg")


@register_source("folder")
class FolderSource(Source):
    """Every ``.png/.jpg/.jpeg`` below ``data.path``; sizes may differ (each is cropped and resized)."""

    accepts = "a folder of PNG/JPEG images"
    uses_key = False

    def __init__(self, cfg):
        super().__init__(cfg)
        if not self.path.is_dir():
            raise DataError(f"data.path: {self.path} is not a folder (source 'folder' reads {self.accepts})")
        files = [p for p in self.path.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file()]
        self.files = sorted(p.relative_to(self.path).as_posix() for p in files)
        if not self.files:
            links = [p for p in self.path.rglob("*") if p.is_symlink() and p.is_dir()]
            hint = (f"; links to folders, such as {links[0]} -> {links[0].resolve()}, are not followed); allowed: a "
                    f"folder that holds the images, e.g. data.path={links[0].resolve()}") if links else ")"
            raise DataError(
                f"data.path: folder {self.path} holds no {'/'.join(SUFFIXES)} files (searched recursively{hint}"
            )

    def __len__(self) -> int:
        return len(self.files)

    def _read(self, ids: np.ndarray) -> list[np.ndarray]:
        paths = [self.path / self.files[i] for i in ids]
        return [decode_image(p, self.cfg.channels, str(p)) for p in paths]

    def image_name(self, i: int) -> str:
        return str(self.path / self.files[i])

    def files_to_fingerprint(self) -> list:
        return [self.path / f for f in self.files]
