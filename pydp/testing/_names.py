"""Names for the namespaces and links a topology creates.

Every name embeds the pid of the process that made it, so parallel runs never
collide and a later run can tell leftovers of dead processes from live ones:

- topology prefix: ``pd<pid>t<n>`` (decimal pid, per-process counter);
- namespace: ``<prefix>[-<label>]-<name>`` (may be long);
- link: ``<kind><pid>_<n36>`` (letters, then the decimal pid, so the two never
  blur, and a base-36 per-process counter), at most 15 characters, the
  kernel's limit (``IFNAMSIZ`` minus the NUL).
"""

from __future__ import annotations

import itertools
import os
import re
import threading

__all__ = [
    "IFNAMSIZ_MAX",
    "NAME_PREFIX",
    "check_label",
    "link_name",
    "link_pid",
    "netns_name",
    "netns_pid",
    "topology_prefix",
]

NAME_PREFIX = "pd"
IFNAMSIZ_MAX = 15

_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_PID_MAX = 4194304  # PID_MAX_LIMIT on 64-bit kernels: 7 decimal digits
_COUNTER_MAX = 36**4 - 1  # 4 base-36 digits: 3 + 7 + 1 + 4 = 15
_KIND_RE = re.compile(r"[a-z]{1,3}")
_LABEL_RE = re.compile(r"[a-z0-9][a-z0-9_]{0,31}")
_NETNS_RE = re.compile(rf"{NAME_PREFIX}(\d+)t(\d+)(?:-|$)")
_LINK_RE = re.compile(r"[a-z]{1,3}([0-9]{1,7})_([0-9a-z]{1,4})")

_lock = threading.Lock()
_topologies = itertools.count()
_links = itertools.count()


def _b36(value: int) -> str:
    digits = ""
    while True:
        value, rest = divmod(value, 36)
        digits = _B36[rest] + digits
        if value == 0:
            return digits


def _next(counter: itertools.count[int]) -> int:
    with _lock:
        return next(counter)


def check_label(what: str, value: str) -> str:
    """Return ``value`` if it is a valid host, container or topology label.

    Labels are 1-32 characters of ``[a-z0-9_]`` starting with a letter or digit.
    """
    if not _LABEL_RE.fullmatch(value):
        raise ValueError(f"{what}: expected 1-32 characters of [a-z0-9_], got {value!r}")
    return value


def topology_prefix(pid: int | None = None, n: int | None = None) -> str:
    """Return a fresh topology prefix ``pd<pid>t<n>``, unique in this process."""
    pid = os.getpid() if pid is None else pid
    n = _next(_topologies) if n is None else n
    return f"{NAME_PREFIX}{pid}t{n}"


def netns_name(prefix: str, name: str, label: str | None = None) -> str:
    """Return the namespace name for ``name`` in the topology ``prefix``."""
    check_label("name", name)
    if label is None:
        return f"{prefix}-{name}"
    return f"{prefix}-{check_label('label', label)}-{name}"


def netns_pid(netns: str) -> int | None:
    """Return the pid embedded in a namespace name of ours, or None if not ours."""
    match = _NETNS_RE.match(netns)
    return int(match.group(1)) if match else None


def link_name(kind: str, pid: int | None = None, n: int | None = None) -> str:
    """Return a fresh link name ``<kind><pid>_<n36>`` of at most 15 characters.

    ``kind`` is 1-3 lower-case letters saying what the link is (``vc`` container
    veth, ``vf`` fabric veth).
    """
    if not _KIND_RE.fullmatch(kind):
        raise ValueError(f"kind: expected 1-3 characters of [a-z], got {kind!r}")
    pid = os.getpid() if pid is None else pid
    if not 0 < pid <= _PID_MAX:
        raise ValueError(f"pid: expected 1..{_PID_MAX}, got {pid}")
    n = _next(_links) % (_COUNTER_MAX + 1) if n is None else n
    if not 0 <= n <= _COUNTER_MAX:
        raise ValueError(f"n: expected 0..{_COUNTER_MAX}, got {n}")
    return f"{kind}{pid}_{_b36(n)}"


def link_pid(ifname: str) -> int | None:
    """Return the pid embedded in a link name made by `link_name`, or None."""
    match = _LINK_RE.fullmatch(ifname)
    return int(match.group(1)) if match else None
