"""pydp.agent: where the store meets the kernel — the reconciler and the host it runs for."""

from __future__ import annotations

from pydp.agent.host import PydpHost
from pydp.agent.reconcile import Reconciler, crashpoint

__all__ = ["PydpHost", "Reconciler", "crashpoint"]
