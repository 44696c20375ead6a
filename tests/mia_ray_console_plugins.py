"""A plugin for the failed-trial tests: a data source that passes the door but fails inside a trial.

``fussy_digits`` is the digits pool, read at most 40 images at a time: the door's scan (chunks of 32) and a
small target's reads pass, while training a target on more than 40 members raises a DataError in the
training task. Each such failure is appended to ``$MIA_RAY_TEST_FAILS`` (to count attempts: not retried).
"""

import os

from mia_ray.data.digits import DigitsSource
from mia_ray.data.registry import SOURCES, register_source
from mia_ray.errors import DataError

if "fussy_digits" not in SOURCES:

    @register_source("fussy_digits")
    class FussyDigits(DigitsSource):
        def _read(self, ids):
            if len(ids) > 40:
                log = os.environ.get("MIA_RAY_TEST_FAILS")
                if log:
                    with open(log, "a") as f:
                        f.write(f"{os.getpid()}\n")
                    if os.environ.get("MIA_RAY_TEST_FAILS_STACK"):
                        import traceback
                        with open(log + ".stack", "a") as f:
                            f.write("".join(traceback.format_stack()) + "\n=====\n")
                raise DataError(f"fussy_digits: cannot read {len(ids)} images at once; allowed: at most 40")
            return super()._read(ids)

        def scan_chunks(self, size: int = 256):
            return super().scan_chunks(min(size, 32))
