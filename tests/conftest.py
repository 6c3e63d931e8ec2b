"""Shared fixtures: a private bpffs root per test session, and root-only skipping."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT_ONLY = ("bpf", "netns")  # tests/<dir> that need root: BPF syscalls and namespaces
IS_ROOT = os.geteuid() == 0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip the root-only directories, with the reason printed, where not root."""
    if IS_ROOT:
        return
    skip = pytest.mark.skip(reason="needs root (BPF syscalls, network namespaces)")
    for item in items:
        if Path(item.fspath).parent.name in ROOT_ONLY:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def bpffs() -> Iterator[Path]:
    """Session scope, needs root: a bpffs root of this run only, exported as PYDP_BPFFS,
    removed with everything pinned under it at the end."""
    from pydp.loader import remove_root

    root = Path(f"/sys/fs/bpf/pydp-test-{os.getpid()}")
    old = os.environ.get("PYDP_BPFFS")
    os.environ["PYDP_BPFFS"] = str(root)
    try:
        yield root
    finally:
        remove_root(root)
        if old is None:
            os.environ.pop("PYDP_BPFFS", None)
        else:
            os.environ["PYDP_BPFFS"] = old
