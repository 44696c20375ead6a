"""Numbers written beyond float64 (``epsilons: [1e400]``): YAML reads them as inf, so a huge finite ε became "no DP"
(trained without DP-SGD, labelled ``eps inf``), silently. Found in the text, before the config is typed."""

from __future__ import annotations

import math
import re

import yaml

from .errors import ConfigError

# a decimal numeral with a point or an exponent (integers are typed int and checked against 64 bits elsewhere)
_FLOAT = re.compile(r"[-+]?(\d[\d_]*\.?[\d_]*|\.\d[\d_]*)([eE][-+]?\d+)?")


def _overflows(text: str) -> bool:
    if not _FLOAT.fullmatch(text) or not ("." in text or "e" in text.lower()):
        return False
    return math.isinf(float(text.replace("_", "")))


def _scalars(node, path: str):
    """(dotted key, scalar text) of every scalar under a composed YAML node."""
    if isinstance(node, yaml.ScalarNode):
        yield path, node.value
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _scalars(item, path)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield from _scalars(value, f"{path}.{key.value}" if path else str(key.value))


def check_overflowing_numbers(text: str, where: str, prefix: str = "") -> None:
    """Refuse a number of ``text`` (YAML) whose magnitude overflows float64; ``where`` starts the message (the
    file, or the override), ``prefix`` is the dotted key the text is the value of. Text YAML cannot compose is
    left to the loader, whose message names it."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return
    for key, value in _scalars(node, prefix) if node is not None else ():
        if _overflows(value):
            reads = "inf, which epsilons take for no DP" if key.split(".")[-1] in ("epsilons", "epsilon") else "inf"
            raise ConfigError(f"{where}{key} has {value}, beyond float64 (it reads as {reads}); allowed: a finite "
                              "number (at most 1.8e308), or .inf where infinity is meant")
