"""Load a sweep YAML (omegaconf), apply ``key=value`` overrides, validate once, expand the grid.

The only module that imports omegaconf. Every problem is a ``ConfigError`` with one line naming the key and
what is allowed, raised before anything is computed or written. After :func:`load`, every value is typed
(attack parameters included: ``cfg.attacks`` maps names to :class:`~mia_ray.config.AttackSpec`).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import math
import os
import re
import types
import typing
from dataclasses import fields, is_dataclass

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException, ValidationError

from .attacks import ATTACKS
from .config import AttackSpec, AuditConfig, CanarySpec, DataConfig, SweepConfig, TargetSpec, Trial
from .data import SOURCES
from .data.base import check_image_shape
from .errors import ConfigError
from .families import FAMILIES
from .overflow import check_overflowing_numbers
from .training.dp import check_budget, validate_dp

GRID_AXES = ("families", "train_sizes", "epsilons", "seeds")
# Keys of the typed configs that a grid axis fills per target: setting them in a sweep is an error.
AXIS_KEYS = {"family.name": "families", "dp.epsilon": "epsilons"}

__all__ = [
    "Trial", "attack_specs", "eps_label", "expand", "given_membership", "given_sizes", "load", "results_root",
    "store_root", "validate",
]


def load(path: str, overrides: list[str] | None = None) -> tuple[SweepConfig, str]:
    """The validated sweep config and its resolved YAML text."""
    if not os.path.isfile(path):
        what = ("is a folder, not a file" if os.path.isdir(path)
                else "is a symlink to nothing (broken, or a loop)" if os.path.islink(path)
                else "is not a regular file" if os.path.exists(path) else "does not exist")  # /dev/null "did not exist"
        raise ConfigError(f"sweep file {path!r} {what}; pass a YAML file such as sweeps/quickstart.yaml")
    cfg, merged = _merge(path, overrides)
    import_plugins(cfg.plugins)
    _refuse_blank(cfg)
    _absolute_paths(cfg)
    validate(cfg)
    return cfg, _resolved_yaml(merged)


def _merge(path: str, overrides: list[str] | None):
    """The YAML and the overrides merged onto ``SweepConfig`` (types and unknown keys checked). A problem of the
    file names the file; one of an override names that override, always as ``override 'key=value': ...`` (the
    overrides are checked and merged one at a time, so the one to blame is known, never the sweep file)."""
    overrides = list(overrides or [])
    try:
        with open(path, encoding="utf-8") as f:
            check_overflowing_numbers(f.read(), f"{path}: ")
        for o in overrides:
            key, _, value = o.partition("=")
            check_overflowing_numbers(value, f"{_blame(o)}: ", key.strip())
        raw = OmegaConf.load(path)
        if len(raw) == 0:  # an empty file would silently run every default
            raise ConfigError(f"{path} is empty; give at least data: and families: (see sweeps/quickstart.yaml)")
        if not OmegaConf.is_dict(raw):  # a YAML list: omegaconf's own message names no key
            raise ConfigError(f"{path} holds a list; allowed: a mapping of keys (name:, data:, families:, ...)")
        _check_part(raw, f"{path}: ")
        singles = _parse_overrides(overrides)
        for o, single in zip(overrides, singles, strict=True):
            _check_part(single, f"{_blame(o)}: ")
        merged = OmegaConf.merge(OmegaConf.structured(SweepConfig), raw)
        if "attacks" in raw:  # the attacks named replace the default ({loss: {}}): merged, it ran loss too
            merged.attacks = raw.attacks
    except ConfigError:
        raise
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        raise ConfigError(f"{path}: key {key!r}: {_omegaconf_message(e)}") from None
    except UnicodeDecodeError as e:  # Latin-1 text: the codec's message said nothing of what is allowed
        raise ConfigError(f"{path}: cannot read the sweep: byte {e.object[e.start]:#04x} at position {e.start} is not "
                          "UTF-8; allowed: a UTF-8 (or ASCII) YAML file") from None
    except Exception as e:  # YAML syntax and the like: yaml's first line ("while constructing a mapping") named
        # neither the key nor the line ("found duplicate key train ... line 8"): all of it, on one line
        found = re.match(r"Invalid loaded object type: (\w+)", str(e))
        if found:  # a file holding one number or string: "cannot read the sweep: Invalid loaded object type: int"
            raise ConfigError(f"{path} holds a single {found.group(1)} value; allowed: a mapping of keys (name:, "
                              "data:, families:, ...)") from None
        raise ConfigError(f"{path}: cannot read the sweep: {' '.join(str(e).split())[:300]}") from None
    for o, single in zip(overrides, singles, strict=True):  # one at a time: a wrong type names its override
        try:
            if o.split("=", 1)[0].strip() == "attacks":  # attacks={...} replaces the attacks, as in the file
                merged.attacks = single.attacks
            merged = OmegaConf.merge(merged, single)
        except OmegaConfBaseException as e:
            raise ConfigError(f"{_blame(o)}: {_omegaconf_message(e, o.split('=', 1)[0].strip())}") from None
    try:
        _list_interpolated_axes(merged)
        return OmegaConf.to_object(merged), merged
    except OmegaConfBaseException as e:  # an interpolation (${...}) that does not resolve, say
        key = getattr(e, "full_key", None) or "?"
        o = _override_of(overrides, key) or _first_unresolvable(raw, singles, overrides)
        where = f"{path}: key {key!r}" if o is None else _blame(o)
        raise ConfigError(f"{where}: {_omegaconf_message(e, o and o.split('=', 1)[0].strip())}") from None


def _list_interpolated_axes(merged) -> None:
    """A grid axis given as ``${...}`` of one value (``seeds: ${eval_size}``) is a one-point grid, as a scalar is:
    resolved on the merged sweep (an untyped copy: the typed one refused the int for its list) and listed."""
    plain = None
    for axis in GRID_AXES:
        if OmegaConf.is_interpolation(merged, axis):
            plain = plain or OmegaConf.create(OmegaConf.to_container(merged))
            value = plain[axis]
            merged[axis] = value if OmegaConf.is_list(value) else [value]


def _first_unresolvable(raw, singles: list, overrides: list[str]) -> str | None:
    """The first override after which the sweep no longer resolves (None: the file alone does not), for an error
    whose key names no override (``family=${data}`` failed on the section as a whole)."""
    merged = OmegaConf.merge(OmegaConf.structured(SweepConfig), raw)
    for o, single in zip([None, *overrides], [OmegaConf.create(), *singles], strict=True):
        try:
            merged = OmegaConf.merge(merged, single)
            _list_interpolated_axes(merged)
            OmegaConf.to_object(merged)
        except OmegaConfBaseException:
            return o
    return None


def _blame(override: str) -> str:
    """How every error of an override starts: ``override 'train.steps=abc'``."""
    return f"override {override!r}"


def _check_part(c, where: str) -> None:
    """The checks of the sweep file or of one override, before merging: a scalar grid axis is a one-point list
    (in place); a mapping in a grid axis, a grid-filled key, a section, list or mapping of the wrong kind and a
    boolean of the wrong kind are refused, each error starting with ``where``."""
    for axis in GRID_AXES:  # a scalar axis is a 1-point grid
        if axis not in c or OmegaConf.is_interpolation(c, axis):  # ${...}: checked once merged, resolved
            continue
        if not OmegaConf.is_list(c[axis]):
            c[axis] = [c[axis]]
        for v in c[axis]:
            if OmegaConf.is_config(v):  # omegaconf merges a mapping into list[int] unchecked
                raise ConfigError(f"{where}{axis} has {OmegaConf.to_container(v)!r}; allowed: a list of values "
                                  "(or one value)")
    plain = OmegaConf.to_container(c)  # unresolved: an override's ${output} refers to a key of the merged sweep
    for key, axis in AXIS_KEYS.items():
        section, name = key.split(".")
        if isinstance(plain.get(section), dict) and plain[section].get(name) is not None:
            raise ConfigError(f"{where}key {key!r} is a grid axis; set {axis}: [...] instead")
    _check_sections(c, where)
    check_containers(c, SweepConfig, where)
    check_booleans(plain, SweepConfig, "", where)


def _omegaconf_message(e: OmegaConfBaseException, key: str | None = None) -> str:
    """The first line of omegaconf's message; for an unknown key without a close match, the keys allowed there; for a
    value of the wrong type, the type allowed ("Cannot convert 'ListConfig' to string" said nothing of a string) of
    the key omegaconf names, else of ``key`` (an override's: omegaconf names none for an interpolated value)."""
    msg = str(e).splitlines()[0]
    known = getattr(e, "object_type", None)
    if "not in" in msg and "Did you mean" not in msg and is_dataclass(known):  # an unknown key, none close
        msg += f"; allowed keys: {', '.join(f.name for f in fields(known))}"
    elif isinstance(e, ValidationError) and "allowed" not in msg:  # not an unresolved ${...}: nothing to type
        allowed = _allowed_type(getattr(e, "full_key", None) or key or "")
        if allowed:
            msg += f"; allowed: {allowed}"
    return msg


_TYPE_WORDS = {int: ("an integer", "integers"), float: ("a number", "numbers"), str: ("a string", "strings"),
               bool: ("true or false", "booleans")}


def _allowed_type(full_key: str) -> str | None:
    """What the key ``full_key`` (``train.steps``, ``seeds[0]``) of SweepConfig takes, in words; None when unknown."""
    cls, kind, item = SweepConfig, None, False
    for part in full_key.split("."):
        m = re.fullmatch(r"(\w+)((?:\[\d+\])*)", part)
        if not m or not is_dataclass(cls):
            return None
        kind = typing.get_type_hints(cls).get(m.group(1))
        if kind is None:
            return None
        item = bool(m.group(2))
        cls = kind
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    optional = len(args) < len(typing.get_args(kind))
    if optional and len(args) == 1:
        kind = args[0]
    if typing.get_origin(kind) is list:
        words = _TYPE_WORDS.get(typing.get_args(kind)[0])
        text = words and f"a list of {words[1]}"
    elif is_dataclass(kind):
        text = f"a mapping of its keys ({', '.join(f.name for f in fields(kind))})"
    elif kind is dict or typing.get_origin(kind) is dict:
        text = "a mapping"
    else:
        words = _TYPE_WORDS.get(kind)
        text = words and words[0]
    if not text:
        return None
    return text if item or not optional else f"{text}, or null"


def _override_of(overrides: list[str], key: str) -> str | None:
    """The override (the last given) that set ``key``, a key above it or one below it (``seeds[0]`` is ``seeds``)."""
    key = re.sub(r"\[\d+\]", "", key)
    for o in reversed(overrides):
        k = o.split("=", 1)[0].strip()
        if k == key or key.startswith(k + ".") or k.startswith(key + "."):
            return o
    return None


def _parse_overrides(overrides: list[str]) -> list:
    """Each ``key=value`` override as a config of its own; a value YAML cannot parse (``attacks={loss:{steps:[0]}}``:
    YAML needs a space after each ':') or a key that is empty is one line naming that override, not the sweep file."""
    parsed = []
    for o in overrides:
        key = o.split("=", 1)[0].strip()
        if not key or "=" not in o or any(not part for part in key.split(".")):
            raise ConfigError(f"{_blame(o)}: allowed: key=value, e.g. train.steps=100 or attacks.loss.steps=[0,50]")
        if "[" in key:  # omegaconf read seeds[0]=5 as a mapping {'0': 5} and failed to merge a list item
            raise ConfigError(f"{_blame(o)}: an item of a list cannot be set alone; allowed: the whole list, "
                              f"e.g. {key.split('[', 1)[0]}=[...]")
        try:
            parsed.append(OmegaConf.from_dotlist([o]))
        except Exception as e:  # yaml's ScannerError / ParserError, omegaconf's grammar errors
            raise ConfigError(
                f"{_blame(o)}: cannot parse its value ({' '.join(str(e).split())[:160]}); allowed: a YAML value, "
                "e.g. attacks='{loss: {steps: [0, 50]}}' (a space after each ':')"
            ) from None
    return parsed


def _check_sections(c, where: str) -> None:
    """A section (``data:``, ``model:``, ``attacks:``, ...) is a mapping or null: omegaconf's own message for
    ``data: 5`` or ``attacks: [loss]`` names no key."""
    hints = typing.get_type_hints(SweepConfig)
    for name in c:
        kind = hints.get(str(name))
        if OmegaConf.is_interpolation(c, name):  # ${...}: checked once merged, resolved
            continue
        value = c[name]
        if (is_dataclass(kind) or kind is dict) and value is not None and not OmegaConf.is_dict(value):
            shown = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            allowed = (
                "a mapping of attack names to their parameters, e.g. attacks: {loss: {steps: [100]}}"
                if kind is dict else f"a mapping of its keys ({', '.join(f.name for f in fields(kind))})"
            )
            raise ConfigError(f"{where}{name} = {shown!r}; allowed: {allowed}")


def _container(kind) -> str | None:
    """"list" or "mapping" for a type hint of either (``Optional`` too), else None."""
    union = typing.get_origin(kind) in (typing.Union, types.UnionType)
    args = [a for a in typing.get_args(kind) if a is not type(None)] if union else []
    kind = args[0] if len(args) == 1 else kind
    if typing.get_origin(kind) is list:
        return "list"
    return "mapping" if kind is dict or typing.get_origin(kind) is dict or is_dataclass(kind) else None


def check_containers(c, cls, where: str, prefix: str = "") -> None:
    """A mapping where ``cls`` has a list, or a list (or a scalar) where it has a mapping, is one line naming the key:
    omegaconf's merge said "Cannot merge incompatible container types" (no key), under an attack a TypeError
    traceback. Also walks ``attacks:`` into each registered attack's parameters (where a scalar for a list is left to
    :func:`attack_specs`: ``secmi: {t_sec: 100}`` is ``[100]``)."""
    hints = typing.get_type_hints(cls)
    in_attack = prefix.startswith("attacks.")
    for name in c:
        kind, key = hints.get(str(name)), f"{prefix}{name}"
        if kind is None or OmegaConf.is_interpolation(c, name) or c[name] is None:
            continue
        value, wants = c[name], _container(kind)
        is_list, is_dict = OmegaConf.is_list(value), OmegaConf.is_dict(value)
        scalar_ok = in_attack and not is_dict  # secmi: {t_sec: 100} is [100]; other scalars: attack_specs names them
        if wants == "list" and not is_list and not scalar_ok or wants == "mapping" and not is_dict:
            shown = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            allowed = "a list (e.g. [10, 20])" if wants == "list" else "a mapping (e.g. {key: value})"
            raise ConfigError(f"{where}{key} = {shown!r}; allowed: {allowed}")
        if is_dataclass(kind) and is_dict:
            check_containers(value, kind, where, f"{key}.")
        if cls is SweepConfig and name == "attacks" and is_dict:
            for attack in value:
                if OmegaConf.is_interpolation(value, attack):
                    continue
                params = value[attack]
                if OmegaConf.is_list(params):
                    raise ConfigError(f"{where}attacks.{attack} = {OmegaConf.to_container(params)!r}; allowed: a "
                                      "mapping of its parameters, or null for defaults")
                if OmegaConf.is_dict(params) and str(attack) in ATTACKS.names():
                    check_containers(params, ATTACKS.get(str(attack)).Params, where, f"attacks.{attack}.")


def check_list_items(obj, prefix: str = "") -> None:
    """Every item of a list-typed key of a typed config has the list's item type: omegaconf merged ``[[1]]`` into a
    list of integers unchecked, and comparing it was a TypeError traceback (``attacks.loss.steps``,
    ``model.block_out_channels``)."""
    hints = typing.get_type_hints(type(obj))
    names = {int: "integers", float: "numbers", str: "strings"}
    for f in fields(obj):
        value, kind = getattr(obj, f.name), hints[f.name]
        if is_dataclass(value):
            check_list_items(value, f"{prefix}{f.name}.")
            continue
        if typing.get_origin(kind) is not list or not isinstance(value, (list, tuple)):
            continue
        item = typing.get_args(kind)[0]
        ok = (int, float) if item is float else item
        for v in value:
            if isinstance(v, bool) or not isinstance(v, ok):
                raise ConfigError(f"{prefix}{f.name} has {v!r}; allowed: a list of {names.get(item, item.__name__)}")


def check_booleans(values, cls, prefix: str, where: str = "") -> None:
    """A boolean key takes YAML ``true``/``false`` only: omegaconf alone reads 3, "yes" or "on" as true. A string key
    takes no boolean: YAML reads an unquoted yes / no / on / off as one, and omegaconf made it the string 'True'
    (``name: yes`` wrote the results to <output>/True)."""
    if not isinstance(values, dict):
        return
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if f.name not in values:
            continue
        v, t = values[f.name], hints[f.name]
        if isinstance(v, str) and "${" in v:  # an interpolation, not yet resolved: omegaconf types what it gives
            continue
        if t is bool and not isinstance(v, bool):
            raise ConfigError(f"{where}{prefix}{f.name} = {v!r}; allowed: true or false")
        if t in (str, str | None) and isinstance(v, bool):
            raise ConfigError(f"{where}{prefix}{f.name} = {v!r}: YAML reads an unquoted yes, no, on, off, true or "
                              f"false as a boolean; allowed: a string (quoted when it is one of those words: "
                              f"{f.name}: 'yes')")
        if is_dataclass(t):
            check_booleans(v, t, f"{prefix}{f.name}.", where)


def _resolved_yaml(merged) -> str:
    """The merged sweep as YAML, without the keys that the grid axes fill (it loads back as is)."""
    plain = OmegaConf.to_container(merged)
    for key in AXIS_KEYS:
        section, name = key.split(".")
        plain[section].pop(name, None)
    return OmegaConf.to_yaml(OmegaConf.create(plain))


def import_plugins(modules: list[str], key: str = "plugins") -> None:
    """Import each plugin module; a name that is not a module path ('' raised ValueError, '.x' TypeError), a
    missing module, one with a syntax error, one whose import raises (a RuntimeError, a name registered twice: a
    traceback) or exits is one line naming it."""
    for m in modules:
        try:
            if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", str(m)):
                raise ImportError("not a dotted module name")
            importlib.import_module(m)
        except (ImportError, SyntaxError) as e:
            reason = " ".join(f"{type(e).__name__ if isinstance(e, SyntaxError) else ''} {e}".split())
            raise ConfigError(f"{key}: cannot import {m!r} ({reason}); allowed: importable module names") from None
        except (Exception, SystemExit) as e:  # the plugin's own code failed while it was imported
            reason = " ".join(f"{type(e).__name__}: {e}".split())[:300]
            raise ConfigError(f"{key}: importing {m!r} raised {reason}; allowed: modules that import cleanly (fix "
                              "the plugin, or leave it out)") from None


def _absolute_paths(cfg: SweepConfig) -> None:
    """Local paths made absolute: Tune trials chdir."""
    for key in ("output", "store"):
        v = getattr(cfg, key)
        if v and "://" not in v:
            setattr(cfg, key, os.path.abspath(os.path.expanduser(v)))
    for key in ("path", "members", "nonmembers"):
        v = getattr(cfg.data, key)
        if v and "://" not in v:
            setattr(cfg.data, key, os.path.abspath(os.path.expanduser(v)))
    p = cfg.model.pretrained
    if p and "://" not in p:
        cfg.model.pretrained = os.path.abspath(os.path.expanduser(p))


def _refuse_blank(cfg: SweepConfig) -> None:
    """Optional text settings are null (the default) or say something: "" read as null (``model.pretrained: ""``
    trained a model from scratch) and " " became a folder named " "."""
    if not cfg.output.strip():  # "" made the results root /<name>
        raise ConfigError(f"output = {cfg.output!r}; allowed: a folder path or a URI such as s3://bucket/prefix")
    settings = {"store": cfg.store, "model.pretrained": cfg.model.pretrained}
    settings |= {f"data.{k}": getattr(cfg.data, k)
                 for k in ("path", "key", "members", "nonmembers", "members_key", "nonmembers_key")}
    for key, v in settings.items():
        if v is not None and not v.strip():
            raise ConfigError(f"{key} = {v!r}; allowed: a non-blank path or name, or null (leave the key out)")


def validate(cfg: SweepConfig) -> None:
    """Value checks that types cannot express; types ``cfg.attacks`` (name -> AttackSpec) in place."""
    if (not cfg.name.strip() or "/" in cfg.name or cfg.name in (".", "..")  # "..": results beside the output folder
            or any(ord(c) < 32 or ord(c) == 127 for c in cfg.name)  # a NUL failed at the first write, after Ray
            or len(os.fsencode(cfg.name)) > 255):  # a folder name: NAME_MAX bytes
        raise ConfigError(f"name = {cfg.name!r}; allowed: a non-empty folder name (at most 255 bytes) without '/' or "
                          "control characters, other than '.' and '..'")
    for key in ("output", "store"):  # s3:// joined with the name was s3:/<name>: a local folder 's3:', unchecked
        v = getattr(cfg, key)
        if v and "://" in v and not v.split("://", 1)[1].strip("/"):
            raise ConfigError(f"{key} = {v!r}; allowed: a folder path or a URI that names a bucket or folder, such "
                              "as s3://bucket/prefix")
    check_list_items(dataclasses.replace(cfg, attacks={}))  # attacks: typed and checked by attack_specs
    given = _check_given(cfg)
    _check_grid(cfg, given)
    check_data_config(cfg.data, given)
    _check_dp(cfg.dp)
    _pipeline_family(cfg)
    _check_family(cfg.family)
    _check_train(cfg.train)
    _check_model(cfg.model, cfg.data.resolution, cfg.data.channels)
    cfg.attacks = {a.name: a for a in attack_specs(cfg)}
    check_trained_here(cfg)
    _check_resources(cfg.resources)
    if not 0 <= cfg.bootstrap <= MAX_BOOTSTRAP:
        raise ConfigError(f"bootstrap = {cfg.bootstrap}; allowed: an integer in [0, {MAX_BOOTSTRAP}] (0 = no CIs)")
    check_utility(cfg.utility, cfg.family.num_steps)
    check_audit(cfg.audit)
    check_numbers(cfg, skip=("attacks", "epsilons", "dp.epsilon", "resources.node_types"))
    for name in cfg.families:  # each family's own rules (e.g. ddpm: beta_max < num_steps), on finite numbers
        FAMILIES.get(name).check(dataclasses.replace(cfg.family, name=name))
    _check_budgets(cfg, given)


def _check_budgets(cfg: SweepConfig, given: bool) -> None:
    """Every finite ε of the grid is reachable by DP-SGD with ``dp.accountant`` on each training-set size
    (targets with canaries train on more images, a count known only with the pool: ``preflight.check_data``)."""
    if given or cfg.audit.canaries:
        return
    for n in cfg.train_sizes:
        for e in cfg.epsilons:
            if math.isfinite(e):
                check_budget(e, cfg.dp.delta, n, cfg.train.batch_size, cfg.train.steps, cfg.dp.accountant)


INT64 = 2**63


def check_numbers(obj, prefix: str = "", skip: tuple[str, ...] = ()) -> None:
    """Every number of a typed config (a dataclass, walked into its sections and lists) is usable downstream: a
    float is finite (NaN or inf passed the range checks and reached training or scoring, e.g. ``train.lr: .inf``),
    an int fits in 64 bits (torch, numpy and the Parquet columns are int64: ``seeds: [2**70]`` failed at the end
    of a trial, when its rows were written). ``skip``: keys checked elsewhere (``epsilons`` allows inf)."""
    for f in fields(obj):
        key, value = f"{prefix}{f.name}", getattr(obj, f.name)
        if key in skip:
            continue
        if is_dataclass(value):
            check_numbers(value, f"{key}.", skip)
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if isinstance(v, int) and not -INT64 <= v < INT64:
                allowed = "integers between -2**63 and 2**63 - 1 (64-bit)"
            elif isinstance(v, float) and not math.isfinite(v):
                allowed = "finite numbers"
            else:
                continue
            shown = f"{key} has {v!r}" if isinstance(value, (list, tuple)) else f"{key} = {v!r}"
            raise ConfigError(f"{shown}; allowed: {allowed}")


def check_trained_here(cfg: SweepConfig) -> None:
    """Audit canaries need a target trained by the sweep: a given model (``model.pretrained``) never trained on
    them, so the one-run bound counted canaries it never saw as included. (LiRA's reference models on a given
    model: ``preflight.check_reference_pool``.)"""
    if cfg.model.pretrained and cfg.audit.canaries:
        raise ConfigError(
            f"audit.canaries = {cfg.audit.canaries} with model.pretrained: canaries are added to the training set "
            "of a target the sweep trains, and a given model was trained elsewhere; allowed: 0"
        )


def check_utility(u, num_steps: int) -> None:
    """utility: samples and held-out images >= 4 (FD / KID need them), DDIM steps in [2, T]."""
    for key in ("samples", "heldout"):
        if getattr(u, key) < 4:
            raise ConfigError(f"utility.{key} = {getattr(u, key)}; allowed: an integer >= 4")
    if u.samples > MAX_UTILITY_SAMPLES:
        raise ConfigError(f"utility.samples = {u.samples}; allowed: an integer in [4, {MAX_UTILITY_SAMPLES}]")
    if not 2 <= u.sampler_steps <= num_steps:
        raise ConfigError(f"utility.sampler_steps = {u.sampler_steps}; allowed: an integer in [2, {num_steps}]")


def check_audit(a) -> None:
    """audit: canaries >= 0; k_plus, k_minus >= 0 with 1 <= k_plus + k_minus <= canaries; 0 < alpha < 1; without
    canaries, k_plus / k_minus null and alpha its default (set, they were ignored: no audit ran)."""
    if a.canaries < 0:
        raise ConfigError(f"audit.canaries = {a.canaries}; allowed: an integer >= 0 (0 = no canary audit)")
    if not 0 < a.alpha < 1:
        raise ConfigError(f"audit.alpha = {a.alpha}; allowed: 0 < alpha < 1")
    if a.canaries == 0:  # the guesses and the level of an audit that does not run were ignored without a word
        unused = [f"audit.{k} = {v:g}" for k, v, default in (("k_plus", a.k_plus, None), ("k_minus", a.k_minus, None),
                                                              ("alpha", a.alpha, AuditConfig.alpha)) if v != default]
        if unused:
            raise ConfigError(f"{', '.join(unused)} with audit.canaries = 0 (no canary audit): allowed: audit.canaries "
                              ">= 1 to run the audit, or leave k_plus / k_minus null and alpha at 0.05")
        return
    k_plus, k_minus = a.guesses()
    if k_plus < 0 or k_minus < 0 or not 1 <= k_plus + k_minus <= a.canaries:
        raise ConfigError(
            f"audit.k_plus + audit.k_minus = {k_plus} + {k_minus}; allowed: integers >= 0 with sum in "
            f"[1, audit.canaries = {a.canaries}]"
        )


def check_pool(cfg, pool_size: int) -> None:
    """The checks of utility and audit that need the pool size (called by ``preflight.check_data``)."""
    m, largest = cfg.audit.canaries, max(cfg.train_sizes)
    free = pool_size - largest - cfg.eval_size
    if m > free:
        raise ConfigError(
            f"audit.canaries = {m}; allowed: at most {max(free, 0)} (the pool of {pool_size} images minus "
            f"max(train_sizes) = {largest} minus eval_size = {cfg.eval_size})"
        )
    if cfg.utility.enabled and pool_size - largest - m < 4:
        raise ConfigError(
            f"utility: the pool of {pool_size} images leaves {pool_size - largest - m} held-out images beside "
            f"max(train_sizes) = {largest} and audit.canaries = {m}; allowed: at least 4 (or utility.enabled=false)"
        )


def given_membership(data: DataConfig) -> bool:
    """True when the sweep names its members and non-members (``data.members`` / ``data.nonmembers``)."""
    return bool(data.members or data.nonmembers)


def _check_given(cfg: SweepConfig) -> bool:
    """Given membership: both sets, no ``data.path``, and a given model (mia_ray trains on drawn splits only)."""
    data = cfg.data
    if not given_membership(data):
        return False
    for key in ("members", "nonmembers"):
        if not getattr(data, key):
            raise ConfigError(f"data.{key} is required with given membership; allowed: a path read by data.source")
    if data.path:
        raise ConfigError(
            f"data.path = {data.path!r} cannot be combined with data.members / data.nonmembers; "
            "allowed: data.path (a drawn split) or both data.members and data.nonmembers (given membership)"
        )
    if not cfg.model.pretrained:
        raise ConfigError(
            "data.members / data.nonmembers need model.pretrained (the model trained on the members); "
            "allowed: model.pretrained = a diffusers UNet2DModel or pipeline directory"
        )
    return True


def _pipeline_family(cfg: SweepConfig) -> None:
    """A pipeline directory's scheduler fixes the family and its schedule (one family; ``families`` picks
    between compatible ones, e.g. vesde / smld); a bare UNet directory uses ``families`` and ``family``."""
    from .pretrained import is_pipeline, pipeline_family

    path = cfg.model.pretrained
    if not path or "://" in path or not is_pipeline(path):
        return  # a missing directory is refused by the door (mia_ray.door.check_model) with its own line
    if len(cfg.families) != 1:
        raise ConfigError(
            f"families = {list(cfg.families)}: model.pretrained {path!r} has one family; allowed: one name "
            "(or leave families out to take the scheduler's)"
        )
    # families left at its default (['ddpm']) takes the scheduler's first family (ScoreSdeVe: vesde)
    name = None if cfg.families == SweepConfig().families else cfg.families[0]
    cfg.family = pipeline_family(path, name)
    cfg.families = [cfg.family.name]


def _check_grid(cfg: SweepConfig, given: bool = False) -> None:
    for axis in GRID_AXES:
        values = list(getattr(cfg, axis))
        if not values:
            raise ConfigError(f"{axis} is empty; give at least one value")
        # a repeated value would make two trials with one id (run twice, one result)
        twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
        if twice is not None:
            raise ConfigError(f"{axis} has {twice} twice; allowed: distinct values")
    for f in cfg.families:
        FAMILIES.get(f, key="families")
    for e in cfg.epsilons:
        if not (e > 0) or MAX_EPSILON < e < math.inf:
            raise ConfigError(f"epsilons has {e}; allowed: numbers in (0, {MAX_EPSILON:g}], or inf for no DP")
    for seed in cfg.seeds:
        if seed < 0:  # numpy's generators (the split, the DP sampler) take no negative seed
            raise ConfigError(f"seeds has {seed}; allowed: integers >= 0")
    if cfg.model.pretrained and any(math.isfinite(e) for e in cfg.epsilons):
        raise ConfigError(
            f"epsilons = {list(cfg.epsilons)} with model.pretrained: a given model is not trained here; allowed: [inf]"
        )
    if given:  # train size = the given members; eval_size is checked against both sets by the door
        if cfg.eval_size < 1:
            raise ConfigError(f"eval_size = {cfg.eval_size}; allowed: an integer >= 1")
        return
    for n in cfg.train_sizes:
        if n < 1:
            raise ConfigError(f"train_sizes has {n}; allowed: integers >= 1")
    if not 1 <= cfg.eval_size <= min(cfg.train_sizes):
        raise ConfigError(
            f"eval_size = {cfg.eval_size}; allowed: 1..{min(cfg.train_sizes)} "
            "(evaluation members are a subset of the smallest training set)"
        )


def check_data_config(data: DataConfig, given: bool = False) -> None:
    """The data keys that need no data: a registered source, its path when it reads one, channels, size."""
    source = SOURCES.get(data.source, key="data.source")
    if source.needs_path and not data.path and not given:
        raise ConfigError(f"data.path is required for data.source = {data.source!r}")
    readers = ", ".join(n for n in SOURCES.names() if SOURCES.get(n).needs_path)
    for key in ("path", "members", "nonmembers"):  # e.g. a path without source: the digits were trained on
        if not source.needs_path and getattr(data, key):
            raise ConfigError(f"data.{key} = {getattr(data, key)!r} is not read: data.source = {data.source!r} reads "
                              f"no files; allowed: a source that reads it ({readers}), or data.{key}: null")
    for key in ("key", "members_key", "nonmembers_key"):
        v = getattr(data, key)
        if v is not None and not source.uses_key:
            keyed = ", ".join(n for n in SOURCES.names() if SOURCES.get(n).uses_key and SOURCES.get(n).needs_path)
            raise ConfigError(f"data.{key} = {v!r} is not read by data.source = {data.source!r}; allowed: null "
                              f"(a key names an array, dataset or column for {keyed})")
    for key in ("members_key", "nonmembers_key"):  # read only with given membership: silently unused otherwise
        if getattr(data, key) is not None and not getattr(data, key.removesuffix("_key")):
            raise ConfigError(f"data.{key} = {getattr(data, key)!r} needs data.{key.removesuffix('_key')}; allowed: "
                              "null (data.key names the array, dataset or column of data.path)")
    check_image_shape(data)


def _check_dp(dp) -> None:
    if not 0 < dp.delta < 1:
        raise ConfigError(f"dp.delta = {dp.delta}; allowed: 0 < delta < 1")
    if dp.max_grad_norm <= 0:
        raise ConfigError(f"dp.max_grad_norm = {dp.max_grad_norm}; allowed: > 0")
    validate_dp(dp)  # dp.accountant, dp.grad_sample_mode, dp.secure_mode


# A finite ε: e^ε bounds the likelihood ratio, so ε = 1e6 already protects nothing; at ε >= 1e14 Opacus' noise
# search (0.01 tolerance, below the float spacing there) never ended and the door hung (measured: 1e12 0.003 s).
MAX_EPSILON = 1e6
# T: the schedules, the per-step tables and all_steps's score rows are O(T) arrays and loops (2**40 passed and
# exhausted memory building them). 100x the paper's T = 1000 leaves room for finer discretisations.
MAX_NUM_STEPS = 100_000
# Training keeps weights, gradients, two Adam moments and (with EMA) a copy in fp32: ~20 bytes per parameter,
# so 2e9 parameters are ~40 GB before activations, half an 80 GB GPU. Pixel-space diffusion UNets are far below
# (full_paper.yaml: 35.7M; the paper's DDPM: 35.7M; ADM ImageNet-512: ~560M); [65536, 65536] asked for 1.1e12.
MAX_PARAMETERS = 2_000_000_000
# Published pixel-space UNets use 2 (DDPM, ADM) to 4 (NCSN++) ResNet blocks per level; 16 keeps counting the
# parameters fast (building the deepest allowed UNet, 11 levels x 16, on the meta device: 0.4 s measured; 1000
# layers took 3.3 s).
MAX_LAYERS_PER_BLOCK = 16
# Resamples of every (trial, attack, step) CI, computed when a trial writes its rows: 1e12 passed and ran (or ran
# out of memory holding the replicates) after training and scoring. A 95% percentile CI is settled at ~10^4
# resamples (Efron & Tibshirani recommend >= 1000); 10^5 is 10x that, 100x full_paper.yaml's 1000.
MAX_BOOTSTRAP = 100_000
# Optimiser steps of one target: training keeps every step's loss (a Python float, ~32 bytes with its list slot:
# 1e12 steps asked for 32 TB, after years), and the door's DP noise calibration grows with the steps (PRV: 7.8 s
# at full_paper.yaml's 500 000 steps, past 9 minutes on 64 full-batch images). 10^7 is 20x full_paper.yaml and
# above the longest published pixel-space runs (DDPM CIFAR-10: 800k; ADM: a few million).
MAX_TRAIN_STEPS = 10_000_000
# Ray counts resources in units of 1e-4 (ray._raylet.RESOURCE_UNIT_SCALING): a smaller nonzero fraction was
# refused by Ray only when the first actor or training task was created, after Ray had started.
MIN_RESOURCE_FRACTION = 1e-4
# DDIM samples of the utility measurement, held in memory at once ([n, C, res, res] float32) and featurised after
# training: 50 000 is the FID convention (Heusel et al. 2017), 2.5 GB at 64 px RGB; 1e12 passed.
MAX_UTILITY_SAMPLES = 50_000


def _check_family(fam) -> None:
    if not 2 <= fam.num_steps <= MAX_NUM_STEPS:
        raise ConfigError(f"family.num_steps = {fam.num_steps}; allowed: an integer in [2, {MAX_NUM_STEPS}]")
    if not 0 < fam.beta_min < fam.beta_max:
        raise ConfigError("family.beta_min / beta_max: allowed 0 < beta_min < beta_max")
    if not 0 < fam.sigma_min < fam.sigma_max:
        raise ConfigError("family.sigma_min / sigma_max: allowed 0 < sigma_min < sigma_max")
    if not 0 < fam.eps < 1:
        raise ConfigError(f"family.eps = {fam.eps}; allowed: 0 < eps < 1")


def _check_train(tr) -> None:
    for key, v in (("train.steps", tr.steps), ("train.batch_size", tr.batch_size)):
        if v < 1:
            raise ConfigError(f"{key} = {v}; allowed: an integer >= 1")
    if tr.steps > MAX_TRAIN_STEPS:
        raise ConfigError(f"train.steps = {tr.steps}; allowed: an integer in [1, {MAX_TRAIN_STEPS:_}] (training keeps "
                          "every step's loss; use --estimate for the device-hours of a long run)")
    if tr.warmup < 0:
        raise ConfigError(f"train.warmup = {tr.warmup}; allowed: an integer >= 0 (0 = no warm-up)")
    if tr.warmup > tr.steps:  # the learning rate ramps over warmup steps: training ended below train.lr, silently
        raise ConfigError(f"train.warmup = {tr.warmup} with train.steps = {tr.steps}: the learning rate would never "
                          "reach train.lr; allowed: an integer in [0, train.steps] (0 = no warm-up)")
    if not tr.grad_clip >= 0:
        raise ConfigError(f"train.grad_clip = {tr.grad_clip}; allowed: a number >= 0 (0 = no clipping)")
    if not tr.lr > 0:
        raise ConfigError(f"train.lr = {tr.lr}; allowed: a number > 0")
    if not 0 <= tr.ema_decay < 1:
        raise ConfigError(f"train.ema_decay = {tr.ema_decay}; allowed: 0 <= ema_decay < 1")


def _check_model(m, resolution: int, channels: int = 3) -> None:
    for key in ("norm_num_groups", "layers_per_block"):  # 0 divided by zero here; diffusers built nothing usable
        if getattr(m, key) < 1:
            raise ConfigError(f"model.{key} = {getattr(m, key)}; allowed: an integer >= 1")
    if m.layers_per_block > MAX_LAYERS_PER_BLOCK:
        raise ConfigError(
            f"model.layers_per_block = {m.layers_per_block}; allowed: an integer in [1, {MAX_LAYERS_PER_BLOCK}]"
        )
    if not m.block_out_channels or any(c < 1 or c % m.norm_num_groups for c in m.block_out_channels):
        raise ConfigError(
            f"model.block_out_channels = {m.block_out_channels}; allowed: a non-empty list of positive multiples of "
            f"model.norm_num_groups = {m.norm_num_groups}"
        )
    if resolution % (2 ** (len(m.block_out_channels) - 1)):
        raise ConfigError(
            f"data.resolution = {resolution} is not divisible by 2^(levels-1) = "
            f"{2 ** (len(m.block_out_channels) - 1)} for model.block_out_channels = {m.block_out_channels}"
        )
    from .models import ATTENTION_HEAD_DIM, count_parameters

    if m.attention and m.block_out_channels[-1] < ATTENTION_HEAD_DIM:  # 0 heads: ZeroDivisionError in training
        raise ConfigError(
            f"model.block_out_channels = {m.block_out_channels} with model.attention = true: the last level has "
            f"{m.block_out_channels[-1]} channels; allowed: at least {ATTENTION_HEAD_DIM} (one attention head), "
            "or model.attention = false"
        )
    if m.pretrained:  # the checkpoint's config.json sizes a given model (checked by the door)
        return
    # every level has a 3x3 convolution of c -> c channels (9 c^2 weights): a channel count that alone exceeds
    # the cap is refused without building (2**62 channels overflowed torch's size arithmetic)
    widest = max(m.block_out_channels)
    bound = 9 * widest * widest
    n = bound if bound > MAX_PARAMETERS else count_parameters(m, channels)
    if n > MAX_PARAMETERS:
        raise ConfigError(
            f"model.block_out_channels = {m.block_out_channels} with model.layers_per_block = {m.layers_per_block} "
            f"make a UNet of {'over ' if n == bound else ''}{n:.3g} parameters; allowed: at most "
            f"{MAX_PARAMETERS:.0e} (lower the channels or layers per block)"
        )


def _check_resources(r) -> None:
    for key in ("scorer_actors", "max_concurrent_trials", "batch_size"):
        if getattr(r, key) is not None and getattr(r, key) < 1:
            raise ConfigError(f"resources.{key} = {getattr(r, key)}; allowed: an integer >= 1")
    for key in ("scorer_cpus", "scorer_gpus", "train_cpus", "train_gpus"):
        if getattr(r, key) is not None and getattr(r, key) < 0:
            raise ConfigError(f"resources.{key} = {getattr(r, key)}; allowed: a number >= 0")
    for key in ("scorer_cpus", "scorer_gpus", "train_cpus", "train_gpus"):
        v = getattr(r, key)
        if v is not None and 0 < v < MIN_RESOURCE_FRACTION:
            raise ConfigError(f"resources.{key} = {v:g}; allowed: 0 or a number >= {MIN_RESOURCE_FRACTION:g} (Ray "
                              "counts resources in steps of 0.0001 and refuses a smaller fraction once it has started)")
    if r.scorer_cpus <= 0:
        raise ConfigError("resources.scorer_cpus must be > 0 (an actor without CPUs gets no torch threads)")
    if r.num_cpus is not None and r.num_cpus < 1:  # a local Ray of 0 CPUs can run no task (refused after it started)
        raise ConfigError(f"resources.num_cpus = {r.num_cpus}; allowed: an integer >= 1, or null for all CPUs")


def attack_specs(cfg: SweepConfig) -> list[AttackSpec]:
    """The configured attacks with typed, validated parameters (already typed ones are kept as they are)."""
    if not cfg.attacks:
        raise ConfigError(f"attacks is empty; allowed: {', '.join(ATTACKS.names())}")
    return [
        params if isinstance(params, AttackSpec) else _attack_spec(name, params, cfg.family.num_steps)
        for name, params in cfg.attacks.items()
    ]


def _attack_spec(name: str, params, num_steps: int) -> AttackSpec:
    attack = ATTACKS.get(name, key="attacks")
    if params is not None and not OmegaConf.is_dict(params) and not isinstance(params, dict):
        raise ConfigError(f"attacks.{name} = {params!r}; allowed: a mapping of its parameters, or null for defaults")
    params = dict(params or {})
    max_samples = params.pop("max_samples", None)
    allowed = [f.name for f in fields(attack.Params)]
    check_booleans(params, attack.Params, f"attacks.{name}.")
    params = _one_element_lists(params, attack.Params, f"attacks.{name}.")
    try:
        typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(attack.Params), params))
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", "?")
        raise ConfigError(
            f"attacks.{name}.{key}: {str(e).splitlines()[0]}; allowed keys: {', '.join(allowed)}, max_samples"
        ) from None
    if max_samples is not None and (isinstance(max_samples, bool) or not isinstance(max_samples, int)
                                    or not 1 <= max_samples < INT64):  # YAML true is the int 1 in Python
        raise ConfigError(f"attacks.{name}.max_samples = {max_samples!r}; allowed: an integer >= 1 or null")
    check_list_items(typed, f"attacks.{name}.")
    attack().validate(typed, num_steps, f"attacks.{name}")
    check_numbers(typed, f"attacks.{name}.")
    return AttackSpec(name, typed, max_samples)


def _one_element_lists(params: dict, cls, prefix: str) -> dict:
    """A number given for a list-of-integers parameter is that one-element list (``secmi: {t_sec: 100}``, the
    form of the authors' setting and of configs written before t_sec became a list); any other scalar there
    (``t_sec: "100"``, ``.nan``) is refused by name (OmegaConf's "AnyNode is not a ListConfig" named no value)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for k, v in params.items():
        if hints.get(k) == list[int] and not (isinstance(v, list | tuple) or OmegaConf.is_list(v)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise ConfigError(f"{prefix}{k} = {v!r}; allowed: a list of integer steps, or one integer step")
            v = [v]
        out[k] = v
    return out


def eps_label(e: float) -> str:
    return "inf" if math.isinf(e) else f"{e:g}"


def given_sizes(cfg: SweepConfig) -> tuple[int, int]:
    """(members, non-members) of a given-membership sweep; opens both sets (headers / listings only)."""
    from .data.given import open_given

    pool = open_given(cfg.data, cfg.data.members, cfg.data.nonmembers)
    m, n = pool.n_members, len(pool) - pool.n_members
    if not 1 <= cfg.eval_size <= min(m, n):
        raise ConfigError(
            f"eval_size = {cfg.eval_size}; allowed: 1..{min(m, n)} (the given {m} members and {n} non-members)"
        )
    return m, n


def expand(cfg: SweepConfig) -> list[Trial]:
    """One trial per target of the grid, in a stable order. With given membership the training-set size is
    the number of given members (``train_sizes`` is not used) and a seed draws only the scored subsets."""
    attacks = attack_specs(cfg)
    trials = []
    train_sizes = [given_sizes(cfg)[0]] if given_membership(cfg.data) else cfg.train_sizes
    for family in cfg.families:
        for n in train_sizes:
            for e in cfg.epsilons:
                for seed in cfg.seeds:
                    spec = TargetSpec(
                        family=dataclasses.replace(cfg.family, name=family),
                        model=copy.deepcopy(cfg.model),
                        train=copy.deepcopy(cfg.train),
                        dp=dataclasses.replace(cfg.dp, epsilon=float(e)),
                        data=copy.deepcopy(cfg.data),
                        train_size=n,
                        seed=seed,
                        canaries=CanarySpec(cfg.audit.canaries, cfg.eval_size) if cfg.audit.canaries else None,
                    )
                    tid = f"{family}-n{n}-eps{eps_label(e)}-s{seed}-{spec.target_id[:8]}"
                    trials.append(Trial(tid, spec, cfg.eval_size, attacks, **_issue13(cfg)))
    return trials


def _issue13(cfg: SweepConfig) -> dict:
    """Trial fields of utility and the canary audit (issue 13)."""
    return {
        # a given model on given sets has no pool to hold images out of (nor labels for the feature net): no utility
        "utility": copy.deepcopy(cfg.utility) if cfg.utility.enabled and not given_membership(cfg.data) else None,
        "heldout_from": max(cfg.train_sizes),
        "audit": copy.deepcopy(cfg.audit) if cfg.audit.canaries else None,
    }


def store_root(cfg: SweepConfig) -> str:
    return cfg.store or f"{cfg.output.rstrip('/')}/store"


def results_root(cfg: SweepConfig) -> str:
    return f"{cfg.output.rstrip('/')}/{cfg.name}"
