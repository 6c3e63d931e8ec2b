"""Unit tests for the names pydp.testing gives namespaces and links (no root needed)."""

from __future__ import annotations

import os

import pytest

import pydp.testing
from pydp.testing import _names
from pydp.testing._names import (
    IFNAMSIZ_MAX,
    check_label,
    link_name,
    link_pid,
    netns_name,
    netns_pid,
    topology_prefix,
)

PID_MAX_LIMIT = 4194304


def test_topology_prefix_embeds_pid_and_is_unique() -> None:
    """Each call gives a new prefix pd<pid>t<n> carrying this process's pid."""
    prefixes = [topology_prefix() for _ in range(100)]
    assert len(set(prefixes)) == 100
    assert all(p.startswith(f"pd{os.getpid()}t") for p in prefixes)


def test_netns_name_parses_back_to_pid() -> None:
    """The pid embedded in a namespace name is read back by netns_pid."""
    prefix = topology_prefix(pid=4321, n=7)
    assert prefix == "pd4321t7"
    assert netns_name(prefix, "h1") == "pd4321t7-h1"
    assert netns_name(prefix, "h1", label="lb") == "pd4321t7-lb-h1"
    assert netns_pid("pd4321t7-h1") == 4321
    assert netns_pid("pd4321t7-lb-h1") == 4321


@pytest.mark.parametrize("name", ["pd", "pdx1t0-a", "pd12-a", "pd12t-a", "xpd12t0-a", "pd12t0x"])
def test_netns_pid_ignores_foreign_names(name: str) -> None:
    """Names not shaped like ours are not claimed (netns_pid gives None)."""
    assert netns_pid(name) is None


def test_link_name_unique_and_short() -> None:
    """Generated link names are unique and fit the kernel's 15-character limit."""
    names = [link_name("vc") for _ in range(1000)]
    assert len(set(names)) == 1000
    assert max(len(n) for n in names) <= IFNAMSIZ_MAX
    assert {link_pid(n) for n in names} == {os.getpid()}


@pytest.mark.parametrize("pid", [1, 10, 13870, 46655, PID_MAX_LIMIT])
def test_link_pid_round_trips(pid: int) -> None:
    """The pid is read back from every name, whatever letters its neighbours are."""
    for kind in ("v", "vc", "abc"):
        assert link_pid(link_name(kind, pid=pid)) == pid


def test_link_name_worst_case_fits_ifnamsiz() -> None:
    """The longest possible name (3-letter kind, largest pid and counter) is 15 characters."""
    name = link_name("abc", pid=PID_MAX_LIMIT, n=36**4 - 1)
    assert len(name) == IFNAMSIZ_MAX
    assert link_pid(name) == PID_MAX_LIMIT


def test_link_name_counter_wraps_within_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A counter past four base-36 digits wraps instead of making a too-long name."""
    monkeypatch.setattr(_names, "_links", iter([36**4 + 5]))
    name = link_name("vc", pid=PID_MAX_LIMIT)
    assert name.endswith("_5")
    assert len(name) <= IFNAMSIZ_MAX


@pytest.mark.parametrize("kind", ["", "veth", "V", "v1"])
def test_link_name_rejects_bad_kind(kind: str) -> None:
    """A kind other than 1-3 lower-case letters is refused with the accepted form."""
    with pytest.raises(ValueError, match=r"^kind: expected 1-3 characters of \[a-z\], got "):
        link_name(kind)


@pytest.mark.parametrize("pid", [0, -1, PID_MAX_LIMIT + 1])
def test_link_name_rejects_bad_pid(pid: int) -> None:
    """A pid outside the kernel's range is refused."""
    with pytest.raises(ValueError, match=rf"^pid: expected 1\.\.{PID_MAX_LIMIT}, got {pid}$"):
        link_name("vc", pid=pid)


@pytest.mark.parametrize("name", ["eth0", "vc12", "pd1t0", "vc12_", "vcABC_1"])
def test_link_pid_ignores_foreign_names(name: str) -> None:
    """Link names not made by link_name are not claimed (link_pid gives None)."""
    assert link_pid(name) is None


@pytest.mark.parametrize("label", ["", "H1", "a-b", "a/b", "_a", "x" * 33])
def test_check_label_rejects_bad_names(label: str) -> None:
    """Host and container names outside [a-z0-9_]{1,32} are refused."""
    with pytest.raises(ValueError, match=r"^name: expected 1-32 characters of \[a-z0-9_\], got "):
        check_label("name", label)


def test_check_label_accepts_good_names() -> None:
    """Valid names are returned unchanged."""
    assert check_label("name", "h1") == "h1"
    assert check_label("name", "web_2") == "web_2"


def test_testing_all_is_sorted_and_exported() -> None:
    """pydp.testing's __all__ is sorted and every name in it exists."""
    assert pydp.testing.__all__ == sorted(pydp.testing.__all__)
    assert all(hasattr(pydp.testing, name) for name in pydp.testing.__all__)
    assert "Topology" in pydp.testing.__all__
    assert "cleanup_stale" in pydp.testing.__all__
