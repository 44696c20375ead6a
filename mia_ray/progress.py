"""Progress for long loops: a tqdm bar on a terminal, a few plain log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("mia_ray")


class Progress:
    """``with Progress(total, desc) as p: p.update(n, loss=...)``."""

    def __init__(self, total: int, desc: str, enabled: bool = True, every: float = 10.0):
        self.total, self.desc, self.every = total, desc, every
        self.done, self._last, self._t0 = 0, 0.0, time.monotonic()
        self._bar = None
        if enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
        self.enabled = enabled

    def update(self, n: int = 1, **info) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            if info:
                self._bar.set_postfix({k: f"{v:.4g}" for k, v in info.items()}, refresh=False)
            return
        now = time.monotonic()
        if self.enabled and (now - self._last >= self.every or self.done >= self.total):
            self._last = now
            extra = " ".join(f"{k}={v:.4g}" for k, v in info.items())
            log.info("%s %d/%d (%.0fs) %s", self.desc, self.done, self.total, now - self._t0, extra)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.close()
