"""Offline checks of cluster/aws.yaml with Ray's own cluster-launcher validator.

Validation uses exactly what `ray up` runs before it talks to AWS:
``ray.autoscaler._private.util.prepare_config`` (merges Ray's bundled AWS defaults, a local YAML file)
followed by ``ray.autoscaler._private.util.validate_config`` (jsonschema against
``ray/autoscaler/ray-schema.json`` plus Ray's cross-field checks). The AWS bootstrap step that needs
boto3 and credentials (``_bootstrap_config`` -> ``bootstrap_aws``) is never called, and sockets are
blocked so that any network access fails the test.
"""

from __future__ import annotations

import copy
import json
import os
import re
import socket
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster" / "aws.yaml"
# The Ray release `make test` installs (Makefile: RAY ?= ray[...]==X); the cluster must run the same.
TESTED_RAY = re.search(r"^RAY \?= ray\[[^\]]*\]==(\S+)$", (ROOT / "Makefile").read_text(), re.M).group(1)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("cluster config validation must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(scope="module")
def text() -> str:
    return CLUSTER_YAML.read_text()


@pytest.fixture
def config(text) -> dict:
    return yaml.safe_load(text)


def ray_validate(cfg: dict) -> dict:
    """What `ray up` does offline: merge Ray's AWS defaults, then Ray's validator; returns the result."""
    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    return prepared


def ray_schema() -> dict:
    import ray.autoscaler

    with open(os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")) as f:
        return json.load(f)


def all_commands(cfg: dict) -> list[str]:
    keys = (
        "initialization_commands",
        "setup_commands",
        "head_setup_commands",
        "worker_setup_commands",
        "head_start_ray_commands",
        "worker_start_ray_commands",
    )
    return [c for k in keys for c in cfg.get(k) or []]


# ---------------------------------------------------------------------------------------------------
# Ray's validator accepts the file


def test_ray_validator_accepts_cluster_yaml(config):
    prepared = ray_validate(config)
    # prepare_config keeps our node types and head type instead of Ray's defaults.
    assert prepared["head_node_type"] == "head"
    assert set(prepared["available_node_types"]) == set(config["available_node_types"])


def test_raw_file_matches_ray_schema(config):
    # The file as written (before Ray merges its defaults) is valid against ray-schema.json too.
    jsonschema.validate(config, ray_schema())


def _node(cfg: dict, name: str = "gpu_1x") -> dict:
    return cfg["available_node_types"][name]


@pytest.mark.parametrize(
    "breakage, error, match",
    [
        (
            lambda c: c.__setitem__("max_worker", c.pop("max_workers")),
            jsonschema.ValidationError,
            "'max_worker' was unexpected",
        ),
        (
            lambda c: c.__setitem__("setup_comands", c.pop("setup_commands")),
            jsonschema.ValidationError,
            "'setup_comands' was unexpected",
        ),
        (
            lambda c: _node(c)["resources"].__setitem__("GPU", "one"),
            jsonschema.ValidationError,
            "'one' is not of type 'integer'",
        ),
        (
            lambda c: _node(c).__setitem__("max_worker", 3),
            jsonschema.ValidationError,
            "'max_worker' was unexpected",
        ),
        (
            lambda c: c.__setitem__("head_node_type", "no_such_type"),
            ValueError,
            "head_node_type` must be one of",
        ),
        (
            lambda c: _node(c).__setitem__("min_workers", 99),
            ValueError,
            "smaller than the sum of `min_workers`",
        ),
    ],
    ids=[
        "typo-max_workers",
        "typo-setup_commands",
        "gpu-not-int",
        "typo-node-max_workers",
        "unknown-head-type",
        "min-workers-over-global-max",
    ],
)
def test_ray_validator_rejects_broken_copy(config, breakage, error, match):
    broken = copy.deepcopy(config)
    breakage(broken)
    with pytest.raises(error, match=match):
        ray_validate(broken)


def test_ray_validator_rejects_broken_file_text(text, tmp_path):
    """A misspelled top-level key in the file itself (not a dict edit) fails validation."""
    broken = tmp_path / "aws.yaml"
    broken.write_text(text.replace("\nidle_timeout_minutes:", "\nidle_timeout_minute:", 1))
    with pytest.raises(jsonschema.ValidationError, match="idle_timeout_minute"):
        ray_validate(yaml.safe_load(broken.read_text()))


def test_commented_docker_block_is_valid(text, config):
    """The optional docker block (commented out) parses, validates and uses the pinned Ray image."""
    lines = text.splitlines()
    start = lines.index("# docker:")
    block = ["docker:"]
    for line in lines[start + 1 :]:
        if not line.startswith("#   "):
            break
        block.append(line[2:])
    docker = yaml.safe_load("\n".join(block))["docker"]
    assert docker["image"] == f"rayproject/ray:{TESTED_RAY}-py311-gpu"
    assert "--gpus all" in docker.get("worker_run_options", [])
    assert "--gpus all" not in docker.get("run_options", []), "the head has no GPU: --gpus all fails there"
    ray_validate({**config, "docker": docker})


# ---------------------------------------------------------------------------------------------------
# Project-specific requirements


def test_head_schedules_no_work(config):
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"].get("CPU") == 0
    assert head["resources"].get("GPU", 0) == 0


def test_autoscaling_gpu_worker_types(config):
    types = config["available_node_types"]
    gpu_types = {name: t for name, t in types.items() if t["resources"].get("GPU", 0) > 0}
    assert gpu_types, "at least one worker type must declare GPUs"
    assert {t["resources"]["GPU"] for t in gpu_types.values()} >= {1, 8}
    for name, t in gpu_types.items():
        assert name != config["head_node_type"]
        assert t.get("min_workers", 0) == 0, f"{name}: GPU workers must scale from zero"
        assert 0 < t["max_workers"] <= config["max_workers"], name
        assert t["resources"].get("CPU", 0) > 0, f"{name}: declare CPUs so Ray need not ask AWS"
    assert config["idle_timeout_minutes"] > 0


def test_ray_pinned_to_the_makefiles_tested_version(config):
    """The cluster runs the Ray release `make test` installs. The local Ray may be any release pyproject
    allows: a sweep connecting to a cluster with another Ray is refused in one line (test_preflight)."""
    pins = set()
    for cmd in all_commands(config):
        pins.update(re.findall(r"ray(?:\[[^\]]*\])?==([0-9][0-9.]*)", cmd))
    assert pins == {TESTED_RAY}, f"setup_commands must pin ray=={TESTED_RAY} (Makefile's RAY), found {pins or 'none'}"


def test_installs_project_and_cuda_torch(config):
    cmds = all_commands(config)
    assert config["file_mounts"].get("~/mia_ray") == "."
    assert any("pip install -e ~/mia_ray" in c for c in cmds)
    torch_idx = next(i for i, c in enumerate(cmds) if "pip install torch" in c)
    assert "download.pytorch.org/whl/cu" in cmds[torch_idx]
    project_idx = next(i for i, c in enumerate(cmds) if "pip install -e ~/mia_ray" in c)
    assert torch_idx < project_idx, "install the CUDA torch before the project so pip keeps it"
    assert any("boto3" in c for c in config["head_setup_commands"]), "the autoscaler on the head needs boto3"


def test_no_world_ingress_and_no_dashboard_exposure(text, config):
    for needle in ("0.0.0.0", "::/0", "8265"):
        assert needle not in text, f"{needle!r} found in cluster/aws.yaml"
    for cmd in config["head_start_ray_commands"]:
        assert "--dashboard-host" not in cmd, "the dashboard must stay on localhost (use `ray dashboard`)"
    assert "IpPermissions" not in json.dumps(config.get("provider", {}))


def test_every_node_type_uses_a_precreated_security_group(config):
    # Without SecurityGroupIds on a node type, `ray up` creates a group that allows SSH from anywhere.
    for name, t in config["available_node_types"].items():
        groups = t["node_config"].get("SecurityGroupIds")
        assert groups and all(str(g).startswith("sg-") for g in groups), name


def test_token_authentication_enabled(config):
    assert "~/.ray/auth_token" in config["file_mounts"], "the auth token must reach every node"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token ray start" in c for c in starts), key
    assert any("export RAY_AUTH_MODE=token" in c for c in config["setup_commands"])


def test_token_auth_mechanism_exists_in_installed_ray():
    """RAY_AUTH_MODE=token is the real switch in the installed Ray (not an invented flag)."""
    from ray._raylet import AuthenticationMode, get_authentication_mode

    assert get_authentication_mode() in (AuthenticationMode.DISABLED, AuthenticationMode.TOKEN)
    src = Path(ray.__file__).parent / "_private" / "authentication" / "authentication_token_setup.py"
    assert "RAY_AUTH_MODE" in src.read_text()
