"""A plugin for the fault-tolerance test: an attack that kills its process the first time it runs.

Imported through the sweep's ``plugins:`` key, by the driver and by every scoring actor (tests put this
folder on PYTHONPATH before Ray starts, so workers can import it).
"""

import os
from dataclasses import dataclass, field

from mia_ray.attacks import ATTACKS
from mia_ray.attacks.loss import LossAttack, LossParams


@dataclass
class CrashOnceParams(LossParams):
    marker: str = ""  # the first actor to score creates this file and dies; later ones score normally
    steps: list[int] = field(default_factory=lambda: [0, 100])


if "crash_once" not in ATTACKS:

    @ATTACKS.register("crash_once")
    class CrashOnce(LossAttack):
        Params = CrashOnceParams

        def run(self, adapter, images, sample_ids, params):
            if params.marker and not os.path.exists(params.marker):
                open(params.marker, "w").close()
                os._exit(1)  # the actor process dies mid-job
            return super().run(adapter, images, sample_ids, params)
