"""The overlay half of a host's datapath: from_overlay on the host's one flow-based VXLAN
device, which delivers what other nodes tunnel here (endpoints on other nodes are entries
of the endpoint map, ENDPOINT_F_REMOTE, written with the local ones by ``Datapath``)."""

from __future__ import annotations

from pathlib import Path

from pydp.loader import Program, SharedObject, attach_tc, bpffs_root, prog_tag, tcx_prog_ids

__all__ = ["OVERLAY_OBJECT", "VXLAN_NAME", "VXLAN_OWNER", "VXLAN_PORT", "OverlayDatapath"]

OVERLAY_OBJECT = "overlay.bpf.o"
VXLAN_NAME = "pydp_vxlan"  # one per host, for every overlay network (the VNI is per packet)
VXLAN_OWNER = "pydp:vxlan"
VXLAN_PORT = 4789  # IANA's VXLAN port, as Docker's overlay and Linux's default


class OverlayDatapath:
    """overlay.bpf.o loaded with its maps pinned under ``root`` (shared by name)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or bpffs_root()
        self._obj = SharedObject(OVERLAY_OBJECT, ("from_overlay",), self.root)
        self.from_overlay: Program = self._obj.program("from_overlay")

    def ensure_attached(self, vxlan_ifindex: int) -> bool:
        """from_overlay at the VXLAN device's TC ingress, unless the same code runs there."""
        ids = tcx_prog_ids(vxlan_ifindex, "ingress") or []
        if any(prog_tag(i) == self.from_overlay.tag for i in ids):
            return False
        attach_tc(self.from_overlay, vxlan_ifindex, "ingress", root=self.root)
        return True

    def close(self) -> None:
        self._obj.close()

    def __enter__(self) -> OverlayDatapath:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
