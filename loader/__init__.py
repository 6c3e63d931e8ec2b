"""pydp.loader: libbpf through cffi — open, load, pin, attach, replace, test-run."""

from __future__ import annotations

from pydp.loader.attach import (
    CGROUP_HOOKS,
    TC_HANDLE,
    TC_PRIORITY,
    Attachment,
    attach_cgroup,
    attach_tc,
    attach_xdp,
    cgroup2_root,
    cgroup_attached,
    detach_cgroup,
    detach_tc,
    detach_xdp,
    prune_links,
    tc_attached,
    tcx_prog_ids,
    xdp_attached,
)
from pydp.loader.btf import Btf
from pydp.loader.maps import Map, num_possible_cpus
from pydp.loader.object import BpfObject, Program, SharedObject, object_dir, prog_tag
from pydp.loader.pin import DEFAULT_ROOT, bpffs_root, ensure_root, is_bpffs, remove_root
from pydp.loader.prog_run import RunResult, test_run

__all__ = [
    "CGROUP_HOOKS",
    "DEFAULT_ROOT",
    "TC_HANDLE",
    "TC_PRIORITY",
    "Attachment",
    "BpfObject",
    "Btf",
    "Map",
    "Program",
    "RunResult",
    "SharedObject",
    "attach_cgroup",
    "attach_tc",
    "attach_xdp",
    "bpffs_root",
    "cgroup2_root",
    "cgroup_attached",
    "detach_cgroup",
    "detach_tc",
    "detach_xdp",
    "ensure_root",
    "is_bpffs",
    "num_possible_cpus",
    "object_dir",
    "prog_tag",
    "prune_links",
    "remove_root",
    "tc_attached",
    "tcx_prog_ids",
    "test_run",
    "xdp_attached",
]
