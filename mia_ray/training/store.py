"""Content-addressed target store: ``<root>/<target_id>/{model/, target.json}``. It stores and finds
(``get``/``put``); ``mia_ray.training.build.get_or_train`` trains what is missing.

The id is a hash of everything that determines the target (``TargetSpec.target_id``). A target is
complete when ``target.json`` is present in its directory. On a local or NFS path a target is built in a
hidden temporary directory and renamed into place (atomic); on an object store (``s3://...``) the
weights are uploaded first and ``target.json`` last (one PUT each), so a crash never leaves something
that is later taken as complete.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass

import pyarrow.fs as pafs

from ..config import TargetSpec, jsonable, spec_from_json, spec_json
from ..models import count_params, load_unet
from ..results import filesystem
from ..store_temps import clear_abandoned, owner_tag

log = logging.getLogger("mia_ray")
META = "target.json"


@dataclass
class Target:
    target_id: str
    spec: TargetSpec
    checkpoint: str  # a local diffusers UNet2DModel directory
    meta: dict  # epsilon_spent, noise_multiplier, final_loss, train_steps, train_seconds, params (and, for
    # targets trained since they were added: heldout_loss, accountant, epsilon_rdp, epsilon_prv)
    trained_now: bool = False

    def load(self, device="cpu"):
        """The target network as a plain ``UNet2DModel`` in eval mode."""
        return load_unet(self.checkpoint, device)


class TargetStore:
    def __init__(self, root: str, cache: str | None = None):
        self.root = root
        self.fs, self.base = filesystem(root)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.cache = cache or os.path.join(tempfile.gettempdir(), "mia_ray_store_cache")

    def _dir(self, target_id: str) -> str:
        return f"{self.base}/{target_id}"

    def get(self, spec: TargetSpec) -> Target | None:
        """The stored target of ``spec``, or None when there is no complete one."""
        if spec.model.pretrained:
            return self._pretrained(spec)
        tid = spec.target_id
        meta_path = f"{self._dir(tid)}/{META}"
        if self.fs.get_file_info(meta_path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(meta_path) as f:
            meta = json.loads(f.read().decode())
        local = self._dir(tid) if self.local else self._download(tid)
        return Target(tid, spec_from_json(meta["spec"]), os.path.join(local, "model"), meta["stats"])

    def put(self, spec: TargetSpec, unet, stats: dict) -> None:
        """Store ``unet`` under ``spec``'s id, atomically; an existing complete target wins."""
        tid = spec.target_id
        meta = json.dumps({"target_id": tid, "spec": spec_json(spec), "stats": jsonable(stats)}, indent=1)
        if self.local:
            os.makedirs(self.base, exist_ok=True)
            tmp = os.path.join(self.base, f".tmp-{tid}-{uuid.uuid4().hex}-{owner_tag()}")
            unet.save_pretrained(os.path.join(tmp, "model"), safe_serialization=True)
            with open(os.path.join(tmp, META), "w") as f:
                f.write(meta)
            final = self._dir(tid)
            if os.path.isdir(final) and not os.path.isfile(os.path.join(final, META)):
                shutil.rmtree(final)  # leftover of an interrupted non-atomic writer: never complete
            try:
                os.rename(tmp, final)
            except OSError:  # another worker stored the same target first: keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
            self.clear_stale_temps(tid)
            return
        with tempfile.TemporaryDirectory() as tmp:
            unet.save_pretrained(os.path.join(tmp, "model"), safe_serialization=True)
            pafs.copy_files(os.path.join(tmp, "model"), f"{self._dir(tid)}/model",
                            source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)
        with self.fs.open_output_stream(f"{self._dir(tid)}/{META}") as f:
            f.write(meta.encode())

    def clear_stale_temps(self, tid: str) -> None:
        """Remove the ``.tmp-<tid>-*`` folders of writers of ``tid`` killed before their rename (a kill -9 of a
        whole sweep mid-write left one, config.json without weights, through every rerun): at once when the
        writer's process is gone from this host, else once older than STALE_SECONDS (``mia_ray.store_temps``:
        concurrent sweeps share the store, a live writer's folder is seconds old)."""
        if self.local:
            clear_abandoned(self.base, re.compile(rf"\.tmp-{re.escape(tid)}-.+"))

    def _download(self, tid: str) -> str:
        local = os.path.join(self.cache, tid)
        if not os.path.isdir(local):
            tmp = f"{local}.{uuid.uuid4().hex}"
            pafs.copy_files(f"{self._dir(tid)}/model", os.path.join(tmp, "model"),
                            source_filesystem=self.fs, destination_filesystem=pafs.LocalFileSystem())
            try:
                os.rename(tmp, local)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
        return local

    def _pretrained(self, spec: TargetSpec) -> Target:
        """A given model (a UNet2DModel or pipeline directory), used in place: nothing is trained or stored."""
        from ..pretrained import load_pipeline_unet, unet_dir

        unet = load_pipeline_unet(spec.model.pretrained)
        stats = {"epsilon_spent": float("inf"), "noise_multiplier": 0.0, "final_loss": float("nan"),
                 "train_steps": 0, "train_seconds": 0.0, "params": count_params(unet)}
        return Target(spec.target_id, spec, unet_dir(spec.model.pretrained), stats)

