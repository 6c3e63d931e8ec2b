"""Nodes: the pydp hosts sharing one store, their names and their registration.

Every controller acts for one node: ``--node NAME``, else ``$PYDP_NODE``, else the host
name. An agent registers its node at ``/nodes/NAME`` under a lease (etcd's: the key goes
when the agent stops renewing it), so a node whose key exists is "ready".
"""

from __future__ import annotations

import inspect
import os
import re
import socket
import time
from collections.abc import Callable, Mapping

from netaddr import IPAddress

from pydp.control.ipam import parse_address
from pydp.control.model import NODES, Node, node_key
from pydp.errors import ConfigError
from pydp.store import Store

__all__ = ["DOWN", "NODE_ENV", "READY", "check_node_name", "node_name", "register", "registered"]

NODE_ENV = "PYDP_NODE"
READY = "ready"  # the node's key exists: its agent keeps it alive under a lease
DOWN = "down"  # the store holds the node's state, but no key: no agent, or its lease ended
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}")
_FORM = "expected 1-64 characters of [a-zA-Z0-9_.-], starting with a letter or digit"


def check_node_name(source: str, name: str) -> str:
    """``name`` if it is a valid node name (it is a store key's last part), else a
    ConfigError naming where it came from."""
    if not _NAME.fullmatch(name):
        raise ConfigError(f'{source}: {_FORM}, got "{name}"')
    return name


def node_name(given: str | None = None) -> str:
    """The node this process acts for: ``given`` (``--node``), else ``$PYDP_NODE``, else
    the host name."""
    if given is not None:
        return check_node_name("--node", given)
    env = os.environ.get(NODE_ENV)
    if env:
        return check_node_name(NODE_ENV, env)
    return check_node_name(f"node name (the host name; give --node or ${NODE_ENV})", _host())


def _host() -> str:
    return socket.gethostname()


def register(
    store: Store,
    name: str,
    address: IPAddress | str | None,
    lease: int | None = None,
    labels: Mapping[str, str] | None = None,
) -> Node:
    """Write ``/nodes/NAME`` (kept alive by ``lease`` when given); a node registering
    again keeps its creation time."""
    check_node_name("node", name)
    if isinstance(address, str):
        address = parse_address("--address", address)
    old = store.get(node_key(name))
    created = time.time() if old is None else Node.from_json(old.value).created
    node = Node(name, address, created, dict(labels or {}))
    if lease is None:
        store.put(node_key(name), node.to_json())
    else:
        _put_with_lease(store, node_key(name), node.to_json(), lease)
    return node


def _put_with_lease(store: Store, key: str, value: str, lease: int) -> None:
    # SEAM(lease): leases belong to the store (etcd: a key attached to a lease the agent
    # grants and renews). `Store` does not declare them yet; a store whose put takes
    # ``lease=`` gets it, any other refuses. When `Store.put` gains ``lease``, call it
    # directly here.
    put: Callable[..., int] = store.put
    try:
        takes_lease = "lease" in inspect.signature(put).parameters
    except (TypeError, ValueError):
        takes_lease = False
    if not takes_lease:
        raise ConfigError(f"register node at {key}: store {store!r} has no leases")
    put(key, value, lease=lease)


def registered(store: Store) -> list[Node]:
    """The nodes whose key exists, by name."""
    return [Node.from_json(e.value) for e in store.list(NODES)]
