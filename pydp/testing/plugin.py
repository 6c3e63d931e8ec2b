"""pytest plugin: namespace topology fixtures (registered as the ``pydp`` plugin).

Fixtures:

- ``netns_ready`` -- session scope: skips unless namespaces can be made here
  (root and ``ip`` from iproute2); for tests that build a `Topology` by hand.
- ``topology`` -- function scope: a fresh `Topology` per test.
- ``topology_module`` -- module scope: one `Topology` shared by a module.
- ``etcd`` -- function scope: a private etcd (`pydp.testing.etcd.etcd_server`).
- ``etcd_module`` -- module scope: one etcd shared by a module.

The topology fixtures depend on ``netns_ready`` and so skip, with the reason
printed, where it skips; the etcd fixtures skip where etcd is not installed.
At session start, namespaces left by dead pytest runs are removed.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pydp.testing.etcd import EtcdServer, etcd_missing, etcd_server
from pydp.testing.topology import Topology, cleanup_stale

__all__ = [
    "etcd",
    "etcd_module",
    "netns_ready",
    "pytest_sessionstart",
    "topology",
    "topology_module",
]

log = logging.getLogger(__name__)


def _missing() -> str | None:
    """Return why namespace topologies cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return f"needs root: network namespaces (running as uid {os.geteuid()})"
    if shutil.which("ip") is None:
        return "needs iproute2: no ip command on PATH"
    return None


def pytest_sessionstart(session: pytest.Session) -> None:
    """Remove namespaces whose creating pid is dead (leftovers of killed runs)."""
    if _missing() is None:
        removed = cleanup_stale()
        if removed:
            log.warning("removed %d stale namespaces: %s", len(removed), " ".join(removed))


@pytest.fixture(scope="session")
def netns_ready() -> None:
    """Skip the test unless network namespaces can be made (root and iproute2).

    Scope: session. Depends on: nothing. Request it (or
    ``pytest.mark.usefixtures("netns_ready")``) in tests that build a
    `Topology` themselves.
    """
    reason = _missing()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def topology(netns_ready: None) -> Iterator[Topology]:
    """A `Topology` for one test, closed after it even when it fails.

    Scope: function. Depends on: ``netns_ready`` (skips without root or
    iproute2). Every namespace and process it made is gone after the test.
    """
    with Topology() as topo:
        yield topo


@pytest.fixture(scope="module")
def topology_module(netns_ready: None) -> Iterator[Topology]:
    """A `Topology` shared by every test of a module, closed after the last one.

    Scope: module. Depends on: ``netns_ready`` (skips without root or
    iproute2). Tests sharing it should add uniquely named hosts and
    containers, since one test's namespaces stay until the module ends.
    """
    with Topology() as topo:
        yield topo


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """A private etcd for one test, on 127.0.0.1 and free ports, killed and its data
    removed after the test even when it fails.

    Scope: function. Depends on: nothing (no root); skips without etcd installed.
    """
    reason = etcd_missing()
    if reason is not None:
        pytest.skip(reason)
    with etcd_server(tmp_path) as server:
        yield server


@pytest.fixture(scope="module")
def etcd_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """One private etcd shared by every test of a module, stopped after the last one.

    Scope: module. Depends on: nothing (no root); skips without etcd installed. Tests
    sharing it should each use their own key prefix (``server.url("/<test>")``) and
    expect other tests' revisions: etcd's revision is cluster-wide.
    """
    reason = etcd_missing()
    if reason is not None:
        pytest.skip(reason)
    with etcd_server(tmp_path_factory.mktemp("etcd")) as server:
        yield server
