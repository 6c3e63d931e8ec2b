"""make demo's program runs to the end, shows the redirect, and leaves nothing behind."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def netns_list() -> set[str]:
    return set(
        subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    )


def test_demo_shows_redirect_and_cleans_up() -> None:
    """The demo pings and streams between two containers, counts redirects, tears down."""
    before_ns, before_pins = netns_list(), set(Path("/sys/fs/bpf").iterdir())
    r = subprocess.run(
        [sys.executable, "-m", "pydp.demo"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "3 packets transmitted, 3 received" in out, out
    sent = re.search(r"(\d+) bytes sent and acknowledged", out)
    assert sent and int(sent.group(1)) >= 50 * 2**20, out  # iperf3 -n may overshoot a block
    redirect = [line for line in out.splitlines() if "REASON_REDIRECT" in line]
    assert redirect and int(redirect[0].split()[1]) > 1000, out
    # other runs on the machine may come and go: look at what the demo names
    assert {n for n in netns_list() - before_ns if "-demo-" in n} == set()
    assert {
        p for p in set(Path("/sys/fs/bpf").iterdir()) - before_pins if "demo" in p.name
    } == set()
