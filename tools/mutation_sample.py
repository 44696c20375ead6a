"""Print a seeded sample of mutmut's mutant names, N per module (docs/mutation.md).

The full set of the core modules is ~1760 mutants; on a shared 2-core machine about ten are tested a
minute, so a fixed random sample per module is what fits. Run after ``mutmut run`` has generated the
mutants (any run, even one interrupted), e.g.::

    mutmut run --max-children 2 $(python tools/mutation_sample.py 50)
"""

import collections
import random
import subprocess
import sys


def main(per_module: int, seed: int = 0) -> None:
    out = subprocess.run(["mutmut", "results", "--all", "true"], capture_output=True, text=True).stdout
    names = [line.split(":")[0].strip() for line in out.splitlines() if "__mutmut_" in line]
    by_module = collections.defaultdict(list)
    for name in names:
        by_module[name.split(".x")[0]].append(name)
    rng = random.Random(seed)
    for module in sorted(by_module):
        pool = sorted(by_module[module])
        print("\n".join(rng.sample(pool, min(per_module, len(pool)))))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0)
