"""Store URLs for etcd: ``etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`` and, for TLS,
``etcds://...[?cacert=FILE&cert=FILE&key=FILE]``."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from pydp.errors import ConfigError

from ._etcdclient import TLSFiles, hostport

__all__ = ["DEFAULT_PORT", "DEFAULT_PREFIX", "URL_FORM", "EtcdURL", "parse_url", "range_end"]

DEFAULT_PREFIX = "/pydp"
DEFAULT_PORT = 2379
URL_FORM = (
    "etcd://HOST:PORT[,HOST:PORT...][/PREFIX] or "
    "etcds://HOST:PORT[,HOST:PORT...][/PREFIX][?cacert=FILE&cert=FILE&key=FILE]"
)
_TLS_OPTIONS = ("cacert", "cert", "key")


@dataclass(frozen=True, slots=True)
class EtcdURL:
    """A parsed store URL; ``str()`` gives it back without its TLS options."""

    endpoints: tuple[tuple[str, int], ...]
    prefix: str
    tls: TLSFiles | None = None

    def __str__(self) -> str:
        scheme = "etcd" if self.tls is None else "etcds"
        return f"{scheme}://{','.join(map(hostport, self.endpoints))}{self.prefix}"


def parse_url(url: str, flag: str = "--store") -> EtcdURL:
    """``etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`` or ``etcds://...[?cacert=&cert=&key=]``
    (PORT defaults to 2379, PREFIX to /pydp); ConfigError naming ``flag`` otherwise."""

    def bad(why: str = "") -> ConfigError:
        return ConfigError(f'{flag}: expected {URL_FORM}, got "{url}"{why}')

    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("etcd", "etcds"):
        raise bad()
    rest, _, query = rest.partition("?")
    hosts, _, path = rest.partition("/")
    endpoints = tuple(_endpoint(h, bad) for h in hosts.split(","))
    path = urllib.parse.unquote(path).strip("/")
    if "\0" in path or "#" in path:
        raise bad(" (PREFIX: a path such as /pydp)")
    prefix = "/" + path if path else DEFAULT_PREFIX
    try:
        options = (
            urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=True)
            if query
            else []
        )
    except ValueError:
        raise bad() from None
    given = dict(options)
    unknown = sorted(set(given) - set(_TLS_OPTIONS))
    if unknown or len(given) != len(options) or not all(given.values()):
        raise bad(f" (options: {', '.join(_TLS_OPTIONS)}, each once, with a value)")
    if scheme == "etcd":
        if given:
            raise bad(" (TLS options need etcds://)")
        return EtcdURL(endpoints, prefix)
    if ("cert" in given) != ("key" in given):
        raise bad(" (cert and key go together)")
    tls = TLSFiles(given.get("cacert"), given.get("cert"), given.get("key"))
    return EtcdURL(endpoints, prefix, tls)


def _endpoint(text: str, bad: Callable[..., ConfigError]) -> tuple[str, int]:
    host, port = text, str(DEFAULT_PORT)
    if text.startswith("["):  # [IPv6]:PORT
        host, close, after = text[1:].partition("]")
        if not close or (after and not after.startswith(":")):
            raise bad()
        port = after[1:] or port
    elif ":" in text:
        host, _, port = text.rpartition(":")
    if not host or any(c in host for c in " /@[]") or not port.isdigit():
        raise bad()
    if not 0 < int(port) < 65536:
        raise bad(f" (port {port}: expected 1-65535)")
    return host, int(port)


def range_end(key: bytes) -> bytes:
    """The end of etcd's range of every key starting with ``key`` (etcd's GetPrefix)."""
    stripped = key.rstrip(b"\xff")
    if not stripped:
        return b"\0"
    return stripped[:-1] + bytes([stripped[-1] + 1])
