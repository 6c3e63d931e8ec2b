"""pytest plugin: namespace topology fixtures (registered as the ``pydp`` plugin).

Fixtures:

- ``netns_ready`` -- session scope: skips unless namespaces can be made here
  (root and ``ip`` from iproute2); for tests that build a `Topology` by hand.
- ``topology`` -- function scope: a fresh `Topology` per test.
- ``topology_module`` -- module scope: one `Topology` shared by a module.

The topology fixtures depend on ``netns_ready`` and so skip, with the reason
printed, where it skips.
At session start, namespaces left by dead pytest runs are removed.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator

import pytest

from pydp.testing.topology import Topology, cleanup_stale

__all__ = ["netns_ready", "pytest_sessionstart", "topology", "topology_module"]

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
