"""Attach programs at TC (tcx links, or clsact filters) and XDP; replace; detach.

tcx links are pinned as ``<root>/links/tc-<ifindex>-<direction>``, so a program
stays attached after the process that attached it exits, and a new one replaces
it atomically (``bpf_link_update``). Where the kernel has no tcx, a clsact qdisc
filter owned by pydp (handle TC_HANDLE, priority TC_PRIORITY) is used instead;
a clsact qdisc is never deleted, since pydp cannot know that it made it.
"""

from __future__ import annotations

import errno as E
import logging
import os
import socket
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydp.errors import AttachError
from pydp.loader._libbpf import ffi, lib
from pydp.loader.object import Program
from pydp.loader.pin import bpffs_root, ensure_root

__all__ = [
    "CGROUP_HOOKS",
    "TC_HANDLE",
    "TC_PRIORITY",
    "Attachment",
    "attach_cgroup",
    "attach_tc",
    "attach_xdp",
    "cgroup2_root",
    "cgroup_attached",
    "detach_cgroup",
    "detach_tc",
    "detach_xdp",
    "prune_links",
    "tc_attached",
    "tcx_prog_ids",
    "xdp_attached",
]

log = logging.getLogger(__name__)

Direction = Literal["ingress", "egress"]
TcMode = Literal["auto", "tcx", "clsact"]
XdpMode = Literal["native", "generic"]

BPF_TCX_INGRESS, BPF_TCX_EGRESS = 46, 47  # enum bpf_attach_type (kernel >= 6.6)
BPF_TC_INGRESS, BPF_TC_EGRESS = 1, 2  # libbpf's enum bpf_tc_attach_point
BPF_TC_F_REPLACE = 1
TC_HANDLE = 0xD0  # the clsact filter handle pydp owns
TC_PRIORITY = 0xD0  # ... and its priority
XDP_FLAGS = {"generic": 1 << 1, "native": 1 << 2}
_TCX_ABSENT = (E.EINVAL, E.EOPNOTSUPP, E.ENOTSUPP if hasattr(E, "ENOTSUPP") else 524)


@dataclass(frozen=True, slots=True)
class Attachment:
    """A program on a hook: tc ingress/egress (tcx or clsact) or xdp (native or generic)."""

    ifindex: int
    hook: str  # "ingress", "egress" or "xdp"
    mode: str  # "tcx", "clsact", "native" or "generic"
    prog_id: int


def _ifname(ifindex: int) -> str:
    try:
        return socket.if_indextoname(ifindex)
    except OSError:
        return "?"


def _where(program: Program | None, ifindex: int, hook: str) -> str:
    what = f"program {program.name} " if program else ""
    return f"{what}{'to' if program else 'from'} {_ifname(ifindex)} (ifindex {ifindex}) {hook}"


def _link_pin(root: Path, ifindex: int, direction: str) -> Path:
    return root / "links" / f"tc-{ifindex}-{direction}"


def _link_info(fd: int) -> Any:
    info = ffi.new("struct pydp_link_info *")
    size = ffi.new("uint32_t *", ffi.sizeof("struct pydp_link_info"))
    if lib.bpf_obj_get_info_by_fd(fd, info, size) != 0:
        raise AttachError.from_errno("read link info", ffi.errno)
    return info


def _open_pinned_link(pin: Path, ifindex: int) -> int:
    """The fd of a live pinned tcx link on ifindex, or -1 (a stale pin is removed)."""
    fd = lib.bpf_obj_get(str(pin).encode())
    if fd < 0:
        return -1
    if _link_info(fd).ifindex == ifindex:
        return int(fd)
    os.close(fd)  # the device went away (or the ifindex was reused): the link is defunct
    pin.unlink(missing_ok=True)
    return -1


def attach_tc(
    program: Program,
    ifindex: int,
    direction: Direction = "ingress",
    mode: TcMode = "auto",
    root: Path | None = None,
) -> Attachment:
    """Attach program at TC on ifindex, atomically replacing the one pydp had there."""
    if direction not in ("ingress", "egress"):
        raise AttachError(f"attach tc: direction must be ingress or egress, got {direction!r}")
    if mode in ("auto", "tcx"):
        att = _attach_tcx(program, ifindex, direction, root or bpffs_root(), mode == "tcx")
        if att is not None:
            return att
    return _attach_clsact(program, ifindex, direction)


def _attach_tcx(
    program: Program, ifindex: int, direction: Direction, root: Path, required: bool
) -> Attachment | None:
    pin = _link_pin(root, ifindex, direction)
    where = _where(program, ifindex, direction)
    fd = _open_pinned_link(pin, ifindex)
    if fd >= 0:
        try:
            if lib.bpf_link_update(fd, program.fd, ffi.NULL) != 0:
                raise AttachError.from_errno(f"replace tc {where}", ffi.errno)
        finally:
            os.close(fd)
        log.info("replaced tc %s (tcx)", where)
        return Attachment(ifindex, direction, "tcx", program.id)
    attach_type = BPF_TCX_INGRESS if direction == "ingress" else BPF_TCX_EGRESS
    fd = lib.bpf_link_create(program.fd, ifindex, attach_type, ffi.NULL)
    if fd < 0:
        err = ffi.errno
        if err in _TCX_ABSENT and not required:
            log.info("tcx unavailable (%s): falling back to clsact", os.strerror(err))
            return None
        raise AttachError.from_errno(f"attach tc {where}", err)
    try:
        ensure_root(root)
        pin.parent.mkdir(exist_ok=True)
        if lib.bpf_obj_pin(fd, str(pin).encode()) != 0:
            raise AttachError.from_errno(f"pin tcx link of {where} at {pin}", ffi.errno)
    finally:
        os.close(fd)  # the pin keeps the link
    log.info("attached tc %s (tcx)", where)
    return Attachment(ifindex, direction, "tcx", program.id)


def _tc_hook(ifindex: int, direction: str) -> Any:
    hook = ffi.new("struct bpf_tc_hook *")
    hook.sz = ffi.sizeof("struct bpf_tc_hook")
    hook.ifindex = ifindex
    hook.attach_point = BPF_TC_INGRESS if direction == "ingress" else BPF_TC_EGRESS
    return hook


def _tc_opts(prog_fd: int = 0, flags: int = 0) -> Any:
    opts = ffi.new("struct bpf_tc_opts *")
    opts.sz = ffi.sizeof("struct bpf_tc_opts")
    opts.prog_fd, opts.flags = prog_fd, flags
    opts.handle, opts.priority = TC_HANDLE, TC_PRIORITY
    return opts


def _attach_clsact(program: Program, ifindex: int, direction: Direction) -> Attachment:
    where = _where(program, ifindex, direction)
    hook = _tc_hook(ifindex, direction)
    ret = lib.bpf_tc_hook_create(hook)
    if ret != 0 and -ret != E.EEXIST:
        raise AttachError.from_errno(f"create clsact qdisc for {where}", -ret)
    opts = _tc_opts(program.fd, BPF_TC_F_REPLACE)
    ret = lib.bpf_tc_attach(hook, opts)
    if ret != 0:
        raise AttachError.from_errno(f"attach tc {where}", -ret)
    log.info("attached tc %s (clsact)", where)
    return Attachment(ifindex, direction, "clsact", int(opts.prog_id))


def tcx_prog_ids(ifindex: int, direction: Direction = "ingress") -> list[int] | None:
    """Ids of every tcx program at ifindex's hook, in run order (one query, no pins opened);
    None where the kernel has no tcx."""
    attach_type = BPF_TCX_INGRESS if direction == "ingress" else BPF_TCX_EGRESS
    ids = ffi.new("uint32_t[]", 64)
    count = ffi.new("uint32_t *", 64)
    if lib.bpf_prog_query(ifindex, attach_type, 0, ffi.NULL, ids, count) != 0:
        err = ffi.errno
        if err in _TCX_ABSENT:
            return None
        raise AttachError.from_errno(f"query tcx {_where(None, ifindex, direction)}", err)
    return [int(ids[i]) for i in range(count[0])]


def tc_attached(
    ifindex: int, direction: Direction = "ingress", root: Path | None = None
) -> Attachment | None:
    """What pydp has attached at TC on ifindex, or None."""
    fd = _open_pinned_link(_link_pin(root or bpffs_root(), ifindex, direction), ifindex)
    if fd >= 0:
        try:
            return Attachment(ifindex, direction, "tcx", int(_link_info(fd).prog_id))
        finally:
            os.close(fd)
    opts = _tc_opts()
    if lib.bpf_tc_query(_tc_hook(ifindex, direction), opts) == 0:
        return Attachment(ifindex, direction, "clsact", int(opts.prog_id))
    return None


def detach_tc(ifindex: int, direction: Direction = "ingress", root: Path | None = None) -> bool:
    """Detach pydp's TC program from ifindex; True if one was there (gone already is fine)."""
    removed = False
    pin = _link_pin(root or bpffs_root(), ifindex, direction)
    fd = _open_pinned_link(pin, ifindex)
    if fd >= 0:
        try:
            if lib.bpf_link_detach(fd) != 0 and ffi.errno not in (E.ENOLINK, E.ENODEV):
                raise AttachError.from_errno(
                    f"detach tc {_where(None, ifindex, direction)}", ffi.errno
                )
        finally:
            os.close(fd)
        pin.unlink(missing_ok=True)
        removed = True
    ret = lib.bpf_tc_detach(_tc_hook(ifindex, direction), _tc_opts())
    if ret == 0:
        removed = True
    elif -ret not in (E.ENOENT, E.EINVAL, E.ENODEV):
        raise AttachError.from_errno(f"detach tc {_where(None, ifindex, direction)}", -ret)
    if removed:
        log.info("detached tc %s", _where(None, ifindex, direction))
    return removed


def prune_links(root: Path | None = None, live: Collection[int] = ()) -> int:
    """Unpin tcx links whose device is gone (the pins of deleted veths); returns how many.
    Pins of the ifindexes in ``live`` (devices known to exist) are not opened."""
    links = (root or bpffs_root()) / "links"
    pruned = 0
    for pin in sorted(links.glob("tc-*-*")) if links.is_dir() else []:
        if int(pin.name.split("-")[1]) in live:
            continue
        fd = lib.bpf_obj_get(str(pin).encode())
        if fd < 0:
            continue
        try:
            dead = _link_info(fd).ifindex == 0
        finally:
            os.close(fd)
        if dead:
            pin.unlink(missing_ok=True)
            pruned += 1
    if pruned:
        log.info("unpinned %d tcx links of deleted devices under %s", pruned, links)
    return pruned


def attach_xdp(program: Program, ifindex: int, mode: XdpMode = "native") -> Attachment:
    """Attach program at XDP on ifindex, atomically replacing whatever ran there."""
    if mode not in XDP_FLAGS:
        raise AttachError(f"attach xdp: mode must be native or generic, got {mode!r}")
    where = _where(program, ifindex, f"xdp ({mode})")
    other: XdpMode = "generic" if mode == "native" else "native"
    if xdp_attached(ifindex, other):
        detach_xdp(ifindex)  # one mode at a time: the kernel refuses a second
    ret = lib.bpf_xdp_attach(ifindex, program.fd, XDP_FLAGS[mode], ffi.NULL)
    if ret != 0:
        raise AttachError.from_errno(f"attach {where}", -ret)
    log.info("attached %s", where)
    return Attachment(ifindex, "xdp", mode, program.id)


def xdp_attached(ifindex: int, mode: XdpMode = "native") -> int:
    """The id of the XDP program attached on ifindex in mode, 0 if none."""
    prog_id = ffi.new("uint32_t *")
    ret = lib.bpf_xdp_query_id(ifindex, XDP_FLAGS[mode], prog_id)
    if ret != 0:
        if -ret in (E.ENODEV, E.ENOENT):
            return 0
        raise AttachError.from_errno(f"query xdp on {_where(None, ifindex, 'xdp')}", -ret)
    return int(prog_id[0])


def detach_xdp(ifindex: int) -> bool:
    """Detach any XDP program from ifindex; True if one was there."""
    removed = False
    modes: tuple[XdpMode, ...] = ("native", "generic")
    for mode in modes:
        if xdp_attached(ifindex, mode):
            ret = lib.bpf_xdp_detach(ifindex, XDP_FLAGS[mode], ffi.NULL)
            if ret != 0 and -ret != E.ENODEV:
                raise AttachError.from_errno(f"detach {_where(None, ifindex, 'xdp')}", -ret)
            removed = True
    if removed:
        log.info("detached %s", _where(None, ifindex, "xdp"))
    return removed


CGROUP_HOOKS = {"connect4": 10, "sendmsg4": 14, "recvmsg4": 19}  # enum bpf_attach_type
CGROUP2_FS = "cgroup2"


def cgroup2_root() -> Path:
    """Where cgroup v2 is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified when hybrid)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[0] == CGROUP2_FS:
                return Path(left.split()[4])
    raise AttachError("attach cgroup program: no cgroup v2 mount (mount -t cgroup2 none DIR)")


def attach_cgroup(program: Program, hook: str, root: Path | None = None) -> Attachment:
    """Attach a sock_addr program at the cgroup v2 root for ``hook`` (connect4, sendmsg4,
    recvmsg4) as a pinned link (several pydp hosts' programs coexist), replacing the one
    pinned there atomically."""
    if hook not in CGROUP_HOOKS:
        raise AttachError(f"attach cgroup: hook must be one of {', '.join(CGROUP_HOOKS)}")
    root = root or bpffs_root()
    pin = root / "links" / f"cg-{hook}"
    where = f"program {program.name} to cgroup {hook}"
    fd = lib.bpf_obj_get(str(pin).encode())
    if fd >= 0:
        try:
            if lib.bpf_link_update(fd, program.fd, ffi.NULL) != 0:
                raise AttachError.from_errno(f"replace {where}", ffi.errno)
        finally:
            os.close(fd)
        return Attachment(0, hook, "cgroup", program.id)
    cg = os.open(cgroup2_root(), os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = lib.bpf_link_create(program.fd, cg, CGROUP_HOOKS[hook], ffi.NULL)
        if fd < 0:
            raise AttachError.from_errno(f"attach {where}", ffi.errno)
    finally:
        os.close(cg)
    try:
        ensure_root(root)
        pin.parent.mkdir(exist_ok=True)
        if lib.bpf_obj_pin(fd, str(pin).encode()) != 0:
            raise AttachError.from_errno(f"pin cgroup link of {where} at {pin}", ffi.errno)
    finally:
        os.close(fd)
    log.info("attached %s", where)
    return Attachment(0, hook, "cgroup", program.id)


def cgroup_attached(hook: str, root: Path | None = None) -> int:
    """The id of the program pinned at ``hook`` under root, 0 if none."""
    fd = lib.bpf_obj_get(str((root or bpffs_root()) / "links" / f"cg-{hook}").encode())
    if fd < 0:
        return 0
    try:
        return int(_link_info(fd).prog_id)
    finally:
        os.close(fd)


def detach_cgroup(hook: str, root: Path | None = None) -> bool:
    """Detach and unpin pydp's program at ``hook``; True if one was there."""
    pin = (root or bpffs_root()) / "links" / f"cg-{hook}"
    fd = lib.bpf_obj_get(str(pin).encode())
    if fd < 0:
        return False
    try:
        lib.bpf_link_detach(fd)
    finally:
        os.close(fd)
    pin.unlink(missing_ok=True)
    log.info("detached cgroup %s", hook)
    return True
