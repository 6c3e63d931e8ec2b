"""The bpffs root where pydp pins maps and links, mounted where it is missing."""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
from pathlib import Path

from pydp.errors import DatapathError

__all__ = ["DEFAULT_ROOT", "bpffs_root", "ensure_root", "is_bpffs", "remove_root"]

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/sys/fs/bpf/pydp")
BPF_FS_MAGIC = 0xCAFE4A11


def bpffs_root() -> Path:
    """The root for this pydp host: ``$PYDP_BPFFS`` or /sys/fs/bpf/pydp."""
    return Path(os.environ.get("PYDP_BPFFS") or DEFAULT_ROOT)


def _mounts() -> list[tuple[str, str]]:
    """(mount point, fs type) of this mount namespace, innermost last."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            out.append((left.split()[4].replace("\\040", " "), right.split()[0]))
    return out


def is_bpffs(path: Path) -> bool:
    """True when path lies on a bpf filesystem."""
    path = path.resolve()
    best, fstype = "", ""
    for mnt, fs in _mounts():
        if (str(path) == mnt or str(path).startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(
            best
        ):
            best, fstype = mnt, fs
    return fstype == "bpf"


def _mount_bpffs(target: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    target.mkdir(parents=True, exist_ok=True)
    if libc.mount(b"bpf", str(target).encode(), b"bpf", 0, b"mode=0700") != 0:
        err = ctypes.get_errno()
        raise DatapathError.from_errno(f"mount bpffs at {target}", err)
    log.info("mounted bpffs at %s", target)


def ensure_root(root: Path | None = None) -> Path:
    """Create the pin root, mounting bpffs first if it is not on one; returns the root."""
    root = root or bpffs_root()
    if not is_bpffs(root):
        sysfs = Path("/sys/fs/bpf")
        if root == sysfs or sysfs in root.parents:
            _mount_bpffs(sysfs)
        else:
            _mount_bpffs(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatapathError.from_errno(f"create pin root {root}", e.errno or 1) from e
    return root


def remove_root(root: Path | None = None) -> None:
    """Unpin everything under root and remove it (pinned maps and links are released)."""
    root = root or bpffs_root()
    if not root.exists():
        return
    shutil.rmtree(root)
    log.info("removed pins under %s", root)
