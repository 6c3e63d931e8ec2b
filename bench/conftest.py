"""Fixtures shared by the benchmark suites: a private bpffs root, a namespace, results.

Run with ``pytest -q -p no:randomly bench`` (``make bench``); every suite writes
``bench/results/<suite>.json`` (``$PYDP_BENCH_RESULTS`` overrides the directory)
and the tables are printed at the end of the session.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench._results import Results, format_table, suite_name
from pydp.testing import Host, Topology, pid_alive

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BPFFS = Path("/sys/fs/bpf")
_ROOT_RE = re.compile(r"pydp-bench-(\d+)")
_written: list[Results] = []


def _results_dir() -> Path:
    return Path(os.environ.get("PYDP_BENCH_RESULTS") or RESULTS_DIR)


def _remove_stale_roots() -> None:
    """Remove the pin roots of benchmark runs whose process is dead."""
    if not BPFFS.is_dir():
        return
    for path in BPFFS.iterdir():
        m = _ROOT_RE.fullmatch(path.name)
        if m and not pid_alive(int(m.group(1))):
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def bpffs_root() -> Iterator[Path]:
    """``$PYDP_BPFFS`` set to ``/sys/fs/bpf/pydp-bench-<pid>`` for the session, removed after.

    Scope: session. Depends on: root (skips otherwise). Pins of dead benchmark
    runs are removed first (the pydp plugin removes their namespaces).
    """
    if os.geteuid() != 0:
        pytest.skip(f"benchmarks need root: BPF and namespaces (running as uid {os.geteuid()})")
    from pydp.loader import remove_root

    _remove_stale_roots()
    root = BPFFS / f"pydp-bench-{os.getpid()}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYDP_BPFFS", str(root))
        try:
            yield root
        finally:
            remove_root(root)


@dataclass(frozen=True)
class BenchHost:
    """A host namespace holding one veth pair (pdv0, pdv1), both up."""

    host: Host
    ifindex: int  # of pdv0, inside the host

    def entered(self) -> AbstractContextManager[None]:
        return self.host.enter()


@pytest.fixture(scope="module")
def netns(topology_module: Topology) -> BenchHost:
    """A host with a veth pair to attach to, deleted after the module even on failure.

    Scope: module. Depends on: topology_module (pydp.testing's plugin).
    """
    host = topology_module.add_host("bench")
    host.ip_batch(
        ["link add pdv0 type veth peer name pdv1", "link set pdv0 up", "link set pdv1 up"]
    )
    return BenchHost(host, host.link("pdv0").ifindex)


@pytest.fixture(scope="module")
def results(request: pytest.FixtureRequest) -> Iterator[Results]:
    """The suite's results, written to ``<results dir>/<suite>.json`` after its last test.

    Scope: module (one suite per ``bench/test_<suite>_bench.py``). Depends on: nothing.
    """
    collected = Results(suite_name(str(request.module.__file__)))
    yield collected
    if collected.rows:
        collected.write(_results_dir())
        _written.append(collected)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print each suite's table after the run."""
    for res in _written:
        terminalreporter.write_sep("=", f"pydp bench: {res.suite}")
        terminalreporter.write_line(format_table(res.rows))
        terminalreporter.write_line(f"written to {_results_dir() / (res.suite + '.json')}")
