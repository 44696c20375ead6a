"""--address: an unreachable cluster or a missing Ray Client is one line before Ray starts (ray.init alone
retries an unreachable GCS for minutes)."""

import os
import socket

import pytest
import ray

from mia_ray.distributed import session
from mia_ray.errors import ConfigError
from mia_ray.sweep import main

QUICK = os.path.join(os.path.dirname(__file__), "..", "sweeps", "quickstart.yaml")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def test_check_reachable():
    port = _closed_port()
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(ConfigError, match=rf"^--address {address} \(or RAY_ADDRESS\): no Ray cluster answers"):
            session.check_reachable(address, timeout_s=2)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        session.check_reachable(f"127.0.0.1:{listening.getsockname()[1]}")  # something answers: no error
    session.check_reachable("auto")  # not host:port: left to Ray
    for address in ("garbage", "10.0.0.5", "head:port"):  # ray.init raised "Invalid address format" (a traceback)
        with pytest.raises(ConfigError, match=rf"^--address {address} \(or RAY_ADDRESS\): not a Ray address; allowed"):
            session.check_reachable(address)


def test_unreachable_address_exits_2_with_one_line(tmp_path, capfd, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    capfd.readouterr()
    address = f"127.0.0.1:{_closed_port()}"
    assert main([QUICK, "--address", address, "--output", str(tmp_path / "out"), "families=[ddpm]"]) == 2
    lines = capfd.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --address {address} (or RAY_ADDRESS): no Ray"), lines
    assert not ray.is_initialized() and not (tmp_path / "out").exists()


def test_no_cluster_to_join_is_one_line(monkeypatch):
    """``--address auto`` with no Ray on this machine: ray.init's ConnectionError was a traceback."""
    def init(**kw):
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to by\n"
                              "setting the `--address` flag or `RAY_ADDRESS` environment variable.")

    monkeypatch.setattr(session.ray, "init", init)
    with pytest.raises(ConfigError, match=r"^--address auto \(or RAY_ADDRESS\): Could not find any running Ray "
                                          r"instance\. Please .* environment variable\.$"):
        with session.ray_session("auto", None):
            pass


def test_missing_ray_client_is_one_line(monkeypatch):
    def init(**kw):
        raise ValueError("Ray Client requires pip package `ray[client]`. If you installed the minimal Ray ...")

    monkeypatch.setattr(session, "check_reachable", lambda address: None)
    monkeypatch.setattr(session.ray, "init", init)
    with pytest.raises(ConfigError, match=r"^--address ray://head:10001: Ray Client is not installed here; pip"):
        with session.ray_session("ray://head:10001", None):
            pass
