"""The cluster checks of ``preflight`` on pure ``ClusterView`` inputs (no Ray): what is up, and what the
autoscaler may launch (cluster/aws.yaml's node types)."""

from __future__ import annotations

import copy
import os
import platform
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import yaml

from mia_ray import sweep_config
from mia_ray.errors import ConfigError
from mia_ray.preflight import (
    ClusterView,
    NodeType,
    check_output,
    check_resources,
    describe,
    node_types_from_cluster_yaml,
    resolve_resources,
    with_setting,
)

ROOT = Path(__file__).resolve().parents[1]
AWS = yaml.safe_load((ROOT / "cluster" / "aws.yaml").read_text())
HEAD = {"NodeManagerAddress": "10.0.0.1", "Resources": {"CPU": 0.0, "memory": 2e10, "node:__internal_head__": 1.0}}


def node(ip, **res) -> dict:
    return {"NodeManagerAddress": ip, "Resources": {"memory": 1e10, **{k: float(v) for k, v in res.items()}}}


def head_only(node_types=(), **kw) -> ClusterView:
    """cluster/aws.yaml right after `ray up`: the CPU-0 head, GPU workers not launched yet."""
    return ClusterView({"CPU": 0.0, "memory": 2e10}, [HEAD], list(node_types), "test", connected=True, **kw)


def aws_types() -> list[NodeType]:
    return node_types_from_cluster_yaml(AWS)


def load(name: str, *overrides: str):
    cfg, _ = sweep_config.load(str(ROOT / "sweeps" / name), list(overrides))
    return cfg


def test_node_types_from_cluster_yaml_are_the_worker_types():
    types = {t.name: t for t in aws_types()}
    assert set(types) == set(AWS["available_node_types"]) - {AWS["head_node_type"]}
    assert types["gpu_1x"] == NodeType("gpu_1x", {"CPU": 4.0, "GPU": 1.0}, 8)
    assert types["gpu_8x"] == NodeType("gpu_8x", {"CPU": 96.0, "GPU": 8.0}, 2)
    capped = node_types_from_cluster_yaml({**AWS, "max_workers": 1})  # the global cap bounds every type
    assert {t.max_workers for t in capped} == {1}


def test_full_paper_accepted_on_head_only_autoscaling_cluster():
    cfg = load("full_paper.yaml", "output=s3://bucket/prefix")
    cluster = head_only(aws_types())
    r = resolve_resources(cfg.resources, cluster)
    check_resources(r, cluster)
    check_output(cfg, cluster)
    # without the node types the same cluster refuses it: what the fix is for
    with pytest.raises(ConfigError, match=r"^resources.scorer_cpus = 4 can never be satisfied"):
        check_resources(r, head_only())


def test_quickstart_auto_resources_on_head_only_gpu_cluster_become_gpus():
    cfg = load("quickstart.yaml", "resources.max_concurrent_trials=null")
    assert cfg.resources.scorer_gpus is None and cfg.resources.train_gpus is None
    before = copy.deepcopy(cfg.resources)
    r = resolve_resources(cfg.resources, head_only(aws_types()))
    assert cfg.resources == before, "resolve_resources must not change the validated config"
    assert (r.scorer_gpus, r.train_gpus) == (1.0, 1.0)
    # every GPU the autoscaler may add: 8 x 1 + 2 x 8 = 24; one trial holds scorer_actors GPUs at most
    assert r.max_concurrent_trials == 24 // max(r.scorer_actors, 1)
    check_resources(r, head_only(aws_types()))


def test_auto_gpus_refused_when_node_types_unknown_on_a_gpu_less_connected_cluster():
    cfg = load("quickstart.yaml")
    with pytest.raises(ConfigError) as e:
        resolve_resources(cfg.resources, head_only())
    msg = str(e.value)
    assert "\n" not in msg and "resources.scorer_gpus" in msg and "resources.train_gpus" in msg
    assert "resources.node_types" in msg
    # explicit keys are accepted as given
    r = resolve_resources(replace(cfg.resources, scorer_gpus=0.0, train_gpus=0.0), head_only())
    assert (r.scorer_gpus, r.train_gpus) == (0.0, 0.0)


def test_auto_resources_on_local_ray_and_cpu_only_types():
    cfg = load("quickstart.yaml")
    local = ClusterView({"CPU": 2.0}, [node("127.0.0.1", CPU=2)])
    r = resolve_resources(cfg.resources, local)
    assert (r.scorer_gpus, r.train_gpus) == (0.0, 0.0)
    cpu_types = head_only([NodeType("cpu", {"CPU": 8.0}, 4)])
    r = resolve_resources(cfg.resources, cpu_types)
    assert (r.scorer_gpus, r.train_gpus) == (0.0, 0.0)
    live_gpu = ClusterView({"CPU": 2.0, "GPU": 2.0}, [node("a", CPU=1, GPU=1), node("b", CPU=1, GPU=1)], connected=True)
    assert resolve_resources(cfg.resources, live_gpu).scorer_gpus == 1.0


@pytest.mark.parametrize(
    "override, message",
    [
        ("resources.scorer_gpus=16", "resources.scorer_gpus = 16 can never be satisfied: the largest is node type "
                                     "gpu_8x with CPU 96, GPU 8 (node types from test)"),
        ("resources.train_cpus=128", "resources.train_cpus = 128 can never be satisfied: the largest is node type "
                                     "gpu_8x with CPU 96, GPU 8"),
    ],
)
def test_impossible_request_refused_naming_key_and_largest_node_type(override, message):
    cfg = load("full_paper.yaml", "output=s3://b/p", override)
    with pytest.raises(ConfigError) as e:
        check_resources(resolve_resources(cfg.resources, head_only(aws_types())), head_only(aws_types()))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_request_fitting_no_single_type_names_both_keys():
    # 8 CPUs exist (cpu type) and 1 GPU exists (gpu type), never together on one machine
    types = [NodeType("cpu", {"CPU": 8.0}, 2), NodeType("gpu", {"CPU": 2.0, "GPU": 1.0}, 2)]
    cfg = load("full_paper.yaml", "resources.scorer_cpus=8", "resources.train_cpus=1")
    with pytest.raises(ConfigError, match=r"^resources.scorer_cpus = 8 with resources.scorer_gpus = 1 can never"):
        check_resources(cfg.resources, head_only(types))


def test_custom_resources_of_node_types_are_shown():
    types = [NodeType("tpu", {"CPU": 4.0, "TPU": 4.0, "accelerator_type:X": 1.0}, 1)]
    line = describe(head_only(types))
    assert "tpu x1 (CPU 4, GPU 0, TPU 4)" in line and "accelerator_type" not in line


@pytest.mark.parametrize("path_key", ["output", "store"])
def test_local_output_refused_when_the_cluster_may_launch_machines(path_key, tmp_path):
    cfg = load("quickstart.yaml", f"output={tmp_path / 'out'}", "store=s3://b/store", "output=s3://b/out")
    setattr(cfg, path_key, str(tmp_path / path_key))
    one_type = head_only([NodeType("gpu_1x", {"CPU": 4.0, "GPU": 1.0}, 1)])  # head + 1 worker = 2 machines
    with pytest.raises(ConfigError) as e:
        check_output(cfg, one_type)
    assert str(e.value).startswith(f"{path_key} = ") and "may launch 1 more" in str(e.value)
    # shared storage passes; so does a cluster that can never grow past one machine
    setattr(cfg, path_key, "s3://b/x")
    check_output(cfg, one_type)
    setattr(cfg, path_key, str(tmp_path / path_key))
    check_output(cfg, head_only([]))
    check_output(cfg, head_only([NodeType("gpu_1x", {"GPU": 1.0}, 3)], types_share_host=True))  # fake provider


def test_local_output_refused_on_several_live_hosts(tmp_path):
    cfg = load("quickstart.yaml", f"output={tmp_path}")
    two = ClusterView({"CPU": 2.0}, [node("10.0.0.1", CPU=1), node("10.0.0.2", CPU=1)], connected=True)
    with pytest.raises(ConfigError, match="has 2 machine"):
        check_output(cfg, two)


def test_assumed_node_types_setting(tmp_path):
    setting = "resources.node_types={gpu_1x: {CPU: 4, GPU: 1, max_workers: 8}}"
    cfg = load("full_paper.yaml", "output=s3://b/p", setting)
    bare = head_only()
    bare.node_types_from = ""
    line = describe(with_setting(bare, cfg.resources))
    assert "gpu_1x x8 (CPU 4, GPU 1)" in line and "assumed from resources.node_types" in line
    r = resolve_resources(cfg.resources, bare)
    check_resources(r, bare)  # accepted with the assumed node type, refused without it (see above)
    # the setting says what the user knows: it wins over what was learned, and so can refuse
    big = load("full_paper.yaml", "output=s3://b/p", setting, "resources.scorer_gpus=8")
    with pytest.raises(ConfigError, match=r"largest is node type gpu_1x .*\(node types from resources.node_types\)"):
        check_resources(big.resources, head_only(aws_types()))
    # the local-output rule counts assumed machines too
    local = load("full_paper.yaml", f"output={tmp_path}", setting)
    with pytest.raises(ConfigError, match="may launch 8 more"):
        check_output(local, bare)


@pytest.mark.parametrize("bad, key", [("{gpu: 4}", "resources.node_types.gpu"),
                                      ("{gpu: {GPU: -1}}", "resources.node_types.gpu.GPU"),
                                      ("{gpu: {GPU: many}}", "resources.node_types.gpu.GPU"),
                                      ("{gpu: {GPU: .nan}}", "resources.node_types.gpu.GPU"),
                                      ("{gpu: {GPU: 1, max_workers: .inf}}", "resources.node_types.gpu.max_workers"),
                                      ("{gpu: {GPU: 1, max_workers: 1.5}}", "resources.node_types.gpu.max_workers")])
def test_bad_node_types_setting_is_one_line(bad, key):
    cfg = load("full_paper.yaml", f"resources.node_types={bad}")
    with pytest.raises(ConfigError) as e:
        resolve_resources(cfg.resources, head_only())
    assert str(e.value).startswith(f"{key} = ") and "allowed" in str(e.value) and "\n" not in str(e.value)


def test_describe_says_where_node_types_come_from():
    assert "[from test]" in describe(head_only(aws_types()))
    assert "no autoscaling node types known" in describe(head_only())
    assert describe(ClusterView({"CPU": 2.0}, [node("x", CPU=2)])).startswith("  cluster: local Ray")


def test_resolved_resources_are_a_copy_of_the_same_type():
    cfg = load("tiny.yaml")
    r = resolve_resources(cfg.resources, ClusterView({"CPU": 2.0}, [node("x", CPU=2)]))
    assert type(r) is type(cfg.resources) and r is not cfg.resources
    assert {k: v for k, v in asdict(r).items() if getattr(cfg.resources, k) is not None} == {
        k: v for k, v in asdict(cfg.resources).items() if v is not None
    }


def test_version_mismatch_is_one_line():
    """Ray's own multi-line refusal (from its version check) becomes one line naming both versions."""
    from ray._private.utils import check_version_info

    from mia_ray.distributed.session import version_mismatch_line

    with pytest.raises(RuntimeError) as e:
        check_version_info({"ray_version": "9.9.9", "python_version": platform.python_version()}, "node x")
    line = version_mismatch_line(str(e.value), "10.0.0.1:6379")
    import ray

    assert line is not None and "\n" not in line
    assert f"the cluster runs Ray 9.9.9 but this machine runs Ray {ray.__version__}" in line
    assert version_mismatch_line("some other RuntimeError", None) is None


def test_bad_node_types_setting_refused_by_the_cli_before_ray(tmp_path, capsys):
    import sweep_files

    from mia_ray.sweep import main

    sweep = sweep_files.write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"))
    assert main([sweep, "--dry-run", "resources.node_types={gpu: {GPU: -1}}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: resources.node_types.gpu.GPU = -1") and "\n" not in err


@pytest.mark.parametrize("over, line", [
    (["resources.scorer_cpus=4", "resources.num_cpus=2"],
     r"^error: resources\.scorer_cpus = 4 can never be satisfied: the local Ray has 2 CPU\(s\) \(resources\.num_cpus"),
    ([f"resources.train_cpus={(os.cpu_count() or 1) + 1}"],
     r"^error: resources\.train_cpus = \d+ can never be satisfied: the local Ray has \d+ CPU\(s\) \(this machine's"),
])
def test_more_cpus_than_the_local_ray_has_are_refused_before_it_starts(tmp_path, capfd, monkeypatch, over, line):
    """check_resources refused these only after a local Ray had started (~10 s); RAY_ADDRESS="" is no address."""
    import re
    import sys

    import sweep_files

    from mia_ray.sweep import main

    monkeypatch.setenv("RAY_ADDRESS", "")
    sweep = sweep_files.write_sweep(tmp_path / "s.yaml", str(tmp_path / "store"))
    capfd.readouterr()
    assert main([sweep, "--output", str(tmp_path / "out"), *over]) == 2
    lines = capfd.readouterr().err.splitlines()
    assert len(lines) == 1 and re.match(line, lines[0]), lines
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
    assert not (tmp_path / "out").exists()
