"""mia_ray: membership inference of diffusion models, at scale.

The package root stays import-light (no torch, no ray) so that ``mia_ray.results`` and the
``analysis`` package can be used without the heavy stack.
"""

__version__ = "0.1.0"
