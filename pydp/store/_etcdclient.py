"""A small client of etcd's v3 API through its gRPC gateway: JSON over HTTP/1.1, stdlib only.

etcd 3.4 serves the gateway under ``/v3/`` on its client port (over TLS when the port is
https). Keys and values are base64 in JSON, 64-bit integers are strings, and fields at
their default value (0, false, empty) are left out of responses. Unary calls reuse
keep-alive connections from a small pool; a watch is one streaming POST whose response
is a sequence of JSON objects, read by a thread into a queue.

Failover: a call that cannot connect to an endpoint tries the next one; a call that may
have reached etcd (the connection broke after the request was sent) is retried on
another endpoint only if it is idempotent (reads, lease keep-alives), since a write may
have been applied.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import queue
import socket
import ssl
import sys
import threading
from dataclasses import dataclass
from typing import Any

from pydp.errors import ConfigError, PydpError

__all__ = ["Client", "EtcdError", "Stream", "TLSFiles", "b64", "hostport", "unb64"]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 3.0  # seconds to connect (and finish TLS) to one endpoint
_POOL_SIZE = 8  # idle connections kept per client
_READ_SIZE = 65536

Json = dict[str, Any]


class EtcdError(PydpError):
    """etcd refused a request, or could not be reached; ``code`` is the gRPC status code
    etcd answered with (None when it was not reached)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """PEM files for TLS: the CA that signed etcd's certificate (None: the system's), and
    this client's certificate and key (None: no client certificate)."""

    cacert: str | None = None
    cert: str | None = None
    key: str | None = None

    def context(self, what: str) -> ssl.SSLContext:
        """An SSL context with these files loaded; ConfigError naming a file that fails."""
        try:
            ctx = ssl.create_default_context(cafile=self.cacert)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"{what}: cacert {self.cacert}: {_reason(e)}") from None
        if self.cert is not None:
            try:
                ctx.load_cert_chain(self.cert, self.key)
            except (OSError, ssl.SSLError) as e:
                raise ConfigError(
                    f"{what}: cert {self.cert}, key {self.key}: {_reason(e)}"
                ) from None
        return ctx


def hostport(endpoint: tuple[str, int]) -> str:
    """``HOST:PORT``, with an IPv6 host in brackets."""
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _reason(e: BaseException) -> str:
    """The words of an OS, TLS or HTTP failure, without Python's decoration."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed: {e.verify_message}"
    if isinstance(e, ssl.SSLEOFError):
        return "TLS: connection closed by etcd"
    if isinstance(e, ssl.SSLError):
        return "TLS: " + (e.reason.lower().replace("_", " ") if e.reason else str(e))
    if isinstance(e, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    if isinstance(e, http.client.RemoteDisconnected | http.client.IncompleteRead):
        return "connection closed by etcd"
    return str(e) or type(e).__name__


class _Transport(Exception):
    """A connection-level failure; ``sent``: the request may have reached etcd."""

    def __init__(self, cause: BaseException, sent: bool) -> None:
        super().__init__(_reason(cause))
        self.cause = cause
        self.sent = sent


class Client:
    """Calls to one etcd cluster at ``endpoints`` (host, port); ``name`` (the store URL)
    goes into every error message."""

    def __init__(
        self,
        name: str,
        endpoints: list[tuple[str, int]],
        tls: TLSFiles | None,
        timeout: float,
    ) -> None:
        self.name = name
        self.endpoints = endpoints
        self.timeout = timeout
        self._ssl = None if tls is None else tls.context(f"store {name}")
        self._no_cert = tls is not None and tls.cert is None
        self._lock = threading.Lock()
        self._current = 0  # the endpoint that answered last
        self._idle: list[tuple[int, http.client.HTTPConnection]] = []
        self._closed = False

    # connections ----------------------------------------------------------------------
    def _connect(self, index: int, timeout: float | None) -> http.client.HTTPConnection:
        host, port = self.endpoints[index]
        conn: http.client.HTTPConnection
        if self._ssl is None:
            conn = http.client.HTTPConnection(host, port, timeout=CONNECT_TIMEOUT)
        else:
            conn = http.client.HTTPSConnection(
                host, port, timeout=CONNECT_TIMEOUT, context=self._ssl
            )
        try:
            conn.connect()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise _Transport(e, sent=False) from None
        assert conn.sock is not None
        conn.sock.settimeout(timeout)
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.suppress(AttributeError, OSError):  # Linux: a dead peer in ~25 s
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 10)
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5)
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
        return conn

    def _take(self, index: int) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection to endpoint ``index`` (reused: True), else a new one."""
        with self._lock:
            if self._closed:
                raise ConfigError(f"store {self.name}: closed")
            for i, (at, conn) in enumerate(self._idle):
                if at == index:
                    del self._idle[i]
                    return conn, True
        return self._connect(index, self.timeout), False

    def _give(self, index: int, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < _POOL_SIZE:
                self._idle.append((index, conn))
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed, idle, self._idle = True, self._idle, []
        for _, conn in idle:
            conn.close()

    def _explain(self, e: _Transport) -> str:
        """Why ``e`` happened. Over TLS 1.3 a server that wants a client certificate sees
        it missing only after the handshake: it alerts ("bad certificate", or from Go 1.21
        "certificate required") and closes, which the client meets as that alert, an EOF
        or a reset, whichever comes first; without a certificate, all say the same."""
        cause = e.cause
        words = str(cause).lower()
        alert = isinstance(cause, ssl.SSLError) and "alert" in words and "certificate" in words
        closed = isinstance(cause, ssl.SSLEOFError | ConnectionResetError | BrokenPipeError)
        if self._no_cert and e.sent and (alert or closed):
            return "TLS: etcd refused a client without a certificate (add cert=FILE&key=FILE)"
        return str(e)

    # calls ------------------------------------------------------------------------------
    def call(self, method: str, body: Json, *, idempotent: bool = False) -> Json:
        """POST ``body`` to ``/v3/<method>`` and return the decoded answer.

        EtcdError with etcd's code when etcd refuses; EtcdError naming the store when no
        endpoint can be reached.
        """
        payload = json.dumps(body).encode()
        failures: list[str] = []
        for step in range(len(self.endpoints)):
            index = (self._current + step) % len(self.endpoints)
            try:
                status, data = self._post(index, method, payload)
            except _Transport as e:
                where = hostport(self.endpoints[index])
                failures.append(f"{where}: {self._explain(e)}")
                if e.sent and not idempotent:
                    raise EtcdError(
                        f"store {self.name}: {method}: lost etcd at {where} ({e}); "
                        "the change may or may not have been made"
                    ) from None
                continue
            self._current = index
            return self._decode(method, status, data)
        raise EtcdError(f"store {self.name}: cannot reach etcd ({'; '.join(failures)})")

    def _post(self, index: int, method: str, payload: bytes) -> tuple[int, bytes]:
        conn, reused = self._take(index)
        try:
            return self._exchange(index, conn, method, payload)
        except _Transport as e:
            if not reused:
                raise
            log.debug("etcd %s: idle connection closed (%s); reconnecting", self.name, e)
        conn, _ = self._take(index)  # an idle connection etcd had closed: once more, fresh
        return self._exchange(index, conn, method, payload)

    def _exchange(
        self, index: int, conn: http.client.HTTPConnection, method: str, payload: bytes
    ) -> tuple[int, bytes]:
        try:
            conn.request("POST", f"/v3/{method}", payload, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise _Transport(e, sent=True) from None
        if resp.will_close:
            conn.close()
        else:
            self._give(index, conn)
        return resp.status, data

    def _decode(self, method: str, status: int, data: bytes) -> Json:
        try:
            answer = json.loads(data)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            text = data[:200].decode(errors="replace").strip()
            raise EtcdError(f"store {self.name}: {method}: HTTP {status}: {text}")
        if "error" in answer or status != 200:
            words = answer.get("message") or answer.get("error") or f"HTTP {status}"
            if isinstance(words, dict):  # a streaming call's error
                words = words.get("message", str(words))
            code = answer.get("code")
            words = str(words).removeprefix("etcdserver: ")
            raise EtcdError(f"store {self.name}: {method}: {words}", code)
        result: Json = answer.get("result", answer)  # streaming calls wrap one "result"
        return result

    def stream(self, method: str, body: Json) -> Stream:
        """A streaming call (watch): the request sent, the answers read by a thread."""
        payload = json.dumps(body).encode()
        failures: list[str] = []
        for step in range(len(self.endpoints)):
            index = (self._current + step) % len(self.endpoints)
            where = hostport(self.endpoints[index])
            try:
                with self._lock:
                    if self._closed:
                        raise ConfigError(f"store {self.name}: closed")
                conn = self._connect(index, self.timeout)
                try:
                    conn.request(
                        "POST", f"/v3/{method}", payload, {"Content-Type": "application/json"}
                    )
                    resp = conn.getresponse()
                except (OSError, http.client.HTTPException) as e:
                    conn.close()
                    raise _Transport(e, sent=True) from None
            except _Transport as e:
                failures.append(f"{where}: {self._explain(e)}")
                continue
            if resp.status != 200:
                data = resp.read()
                conn.close()
                self._decode(method, resp.status, data)  # raises with etcd's words
            self._current = index
            return Stream(self.name, where, conn, resp)
        raise EtcdError(f"store {self.name}: cannot reach etcd ({'; '.join(failures)})")


class Stream:
    """The answers of one streaming call, decoded by a reader thread into a queue.

    ``get`` returns the next answer, None after ``timeout`` seconds without one, and
    raises EtcdError once the stream has ended (etcd closed it or the connection broke).
    """

    def __init__(
        self,
        name: str,
        where: str,
        conn: http.client.HTTPConnection,
        resp: http.client.HTTPResponse,
    ) -> None:
        self.name = name
        self.where = where
        self._conn = conn
        self._resp = resp
        self._queue: queue.SimpleQueue[Json | BaseException] = queue.SimpleQueue()
        self._ended: BaseException | None = None
        assert conn.sock is not None
        conn.sock.settimeout(None)  # the reader blocks; close() wakes it
        self._thread = threading.Thread(target=self._read, name=f"etcd-watch {where}", daemon=True)
        self._closed = False
        self._thread.start()

    def _read(self) -> None:
        decoder = json.JSONDecoder()
        buf = ""
        raw = b""
        try:
            while True:
                chunk = self._resp.read1(_READ_SIZE)
                if not chunk:
                    raise EOFError("stream closed by etcd")
                raw += chunk
                try:
                    text = raw.decode()
                except UnicodeDecodeError:  # a multi-byte character split between reads
                    continue
                buf, raw = buf + text, b""
                while True:
                    buf = buf.lstrip()
                    if not buf:
                        break
                    try:
                        obj, end = decoder.raw_decode(buf)
                    except ValueError:
                        break  # incomplete: wait for more
                    buf = buf[end:]
                    self._queue.put(obj)
        except BaseException as e:  # handed to the consumer, whatever it is
            self._queue.put(e)
        finally:
            with contextlib.suppress(Exception):
                self._conn.close()  # here, by the reader: close() must not race its reads

    def get(self, timeout: float | None) -> Json | None:
        if self._ended is not None:
            raise self._error(self._ended)
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            self._ended = item
            raise self._error(item)
        if "error" in item:
            err = item["error"]
            words = err.get("message", str(err)) if isinstance(err, dict) else str(err)
            self._ended = EOFError(words)
            raise EtcdError(f"store {self.name}: watch at {self.where}: {words}")
        result: Json = item.get("result", item)
        return result

    def _error(self, e: BaseException) -> EtcdError:
        return EtcdError(f"store {self.name}: watch at {self.where}: {_reason(e)}")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        sock = self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # wakes the reader
        if not sys.is_finalizing():  # at exit, daemon threads are frozen: never wait
            self._thread.join(timeout=2)
