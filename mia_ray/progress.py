"""Progress for long loops: a tqdm bar on a terminal, a few plain log lines otherwise."""

from __future__ import annotations

import logging
import os
import sys
import threading
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


def _columns(stream) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


class SweepProgress:
    """The sweep's console: one live bar (targets trained and scored of the total, elapsed, ETA) and one line
    per finished or failed target on a terminal; the same events as plain lines without one (CI, logs).

    Fed by the driver (``mia_ray.distributed.tuning`` relays Tune's events): ``trained``, ``finished``,
    ``failed``. ``done`` targets (complete from an earlier run) count as finished from the start.
    """

    def __init__(self, total: int, done: int = 0, stream=None, bar: bool | None = None):
        self.stream = stream or sys.stdout
        self.total, self.n_scored, self.n_trained, self.n_failed = total, done, done, 0
        self._t0 = time.monotonic()
        tty = getattr(self.stream, "isatty", lambda: False)()
        self._bar = None
        if bar if bar is not None else tty:
            from tqdm.auto import tqdm

            # a terminal that reports 0 columns (a pty without a size: `script`, some CI runners) draws nothing
            width = {"dynamic_ncols": True} if _columns(self.stream) > 0 else {"ncols": 100, "nrows": 24}
            self._bar = tqdm(total=total, initial=done, desc="targets scored", unit="target", file=self.stream,
                             bar_format="{desc} {n}/{total} |{bar}| {elapsed}<{remaining}{postfix}", **width)
            self._postfix()
            # tqdm redraws only on an update; a target takes minutes, so a ticker keeps elapsed/ETA live
            self._stop = threading.Event()
            threading.Thread(target=self._tick, name="mia_ray-progress", daemon=True).start()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            bar = self._bar
            if bar is not None:
                bar.refresh()

    def _postfix(self) -> None:
        failed = f", failed {self.n_failed}" if self.n_failed else ""
        self._bar.set_postfix_str(f"trained {self.n_trained}/{self.total}{failed}")

    def _line(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def _clock(self) -> str:
        s = int(time.monotonic() - self._t0)
        return f"{s // 60}:{s % 60:02d}"

    def trained(self, trial_id: str, seconds: float | None = None, stored: bool = False) -> None:
        self.n_trained += 1
        if self._bar is not None:
            self._postfix()
            self._bar.refresh()
        else:
            how = "found in the store" if stored else f"trained in {seconds:.0f} s"
            self._line(f"[{self._clock()}] trained {self.n_trained}/{self.total}: {trial_id} ({how})")

    def finished(self, trial_id: str, summary: str) -> None:
        self.n_scored += 1
        self._line(f"[{self._clock()}] done {self.n_scored}/{self.total}: {trial_id}  {summary}")
        if self._bar is not None:
            self._bar.update(1)

    def failed(self, trial_id: str, message: str) -> None:
        self.n_failed += 1
        self._line(f"[{self._clock()}] FAILED {trial_id}: {message}")
        if self._bar is not None:
            self._postfix()
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._stop.set()
            bar, self._bar = self._bar, None
            bar.close()
