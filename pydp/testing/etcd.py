"""A private etcd for tests: one member on free ports with a temporary data dir, and TLS
certificates made with openssl.

::

    from pydp.store import EtcdStore
    from pydp.testing.etcd import etcd_server

    with etcd_server(tmp_path) as etcd:
        store = EtcdStore(etcd.url("/mytest"))

`etcd_server` starts Debian's etcd (package ``etcd-server``), waits until it answers
(about 0.1 s: elections are shortened), and at the end kills it and removes its data,
also when the block fails. ``tls=make_certs(dir)`` serves TLS and requires client
certificates; ``netns=`` runs it inside a network namespace (on ``host``, an address
there). The pydp pytest plugin offers it as the ``etcd`` (function scope) and
``etcd_module`` (module scope) fixtures. No root is needed, except for ``netns``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydp.store._etcdclient import Client, EtcdError, TLSFiles, b64, hostport
from pydp.testing.errors import TopologyError

__all__ = ["ETCD", "EtcdServer", "TLSCerts", "etcd_missing", "etcd_server", "make_certs"]

log = logging.getLogger(__name__)

ETCD = "/usr/bin/etcd"
START_TIMEOUT = 10.0  # seconds for etcd to answer after it is started
_STOP_GRACE = 5.0


@dataclass(frozen=True, slots=True)
class TLSCerts:
    """A test CA, a server certificate for etcd and a client certificate, as PEM files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def etcd_missing() -> str | None:
    """Why an etcd cannot be started here, or None if it can."""
    if not os.access(ETCD, os.X_OK):
        return f"needs etcd: no {ETCD} (apt-get install etcd-server)"
    return None


def _openssl(*args: str | Path, cwd: Path) -> None:
    cmd = ["openssl", *map(str, args)]
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise TopologyError(f"run {' '.join(cmd)}: {result.stderr.strip()}")


def make_certs(directory: Path, host: str = "127.0.0.1") -> TLSCerts:
    """Make a CA in ``directory`` and sign with it a certificate for etcd at ``host`` (an IP
    address, also valid for localhost) and one for a client; P-256 keys, valid 2 days."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=pydp test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    # etcd's gateway dials etcd's own gRPC port with the server certificate: clientAuth too
    usages = {
        "server": f"subjectAltName=IP:{host},DNS:localhost\n"
        "extendedKeyUsage=serverAuth,clientAuth\n",
        "client": "extendedKeyUsage=clientAuth\n",
    }
    for name, ext in usages.items():
        common = "keyUsage=critical,digitalSignature\nauthorityKeyIdentifier=keyid\n"
        (directory / f"{name}.ext").write_text(common + ext)
        _openssl("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN=pydp test {name}", cwd=directory)  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
            cwd=directory,
        )  # fmt: skip
    d = directory
    return TLSCerts(
        d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key"
    )


@dataclass(frozen=True, slots=True)
class EtcdServer:
    """A running test etcd: its client address, data dir, log and TLS files."""

    host: str
    port: int
    peer_port: int
    data_dir: Path
    log: Path
    pid: int
    tls: TLSCerts | None = None

    @property
    def endpoint(self) -> str:
        return hostport((self.host, self.port))

    def url(self, prefix: str = "", client_cert: bool = True) -> str:
        """A store URL for this etcd with key ``prefix``; with TLS, the CA and (unless
        ``client_cert`` is False) the client certificate as its options."""
        if self.tls is None:
            return f"etcd://{self.endpoint}{prefix}"
        options = f"cacert={self.tls.ca}"
        if client_cert:
            options += f"&cert={self.tls.client_cert}&key={self.tls.client_key}"
        return f"etcds://{self.endpoint}{prefix}?{options}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _in_netns(netns: str | None) -> contextlib.AbstractContextManager[None]:
    if netns is None:
        return contextlib.nullcontext()
    from pydp.net.netns import entered

    return entered(netns)


def _argv(host: str, port: int, peer: int, data: Path, tls: TLSCerts | None) -> list[str]:
    scheme = "http" if tls is None else "https"
    client = f"{scheme}://{hostport((host, port))}"
    peer_url = f"http://{hostport((host, peer))}"
    argv = [
        ETCD, "--name", "pydp-test", "--data-dir", str(data),
        "--listen-client-urls", client, "--advertise-client-urls", client,
        "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"pydp-test={peer_url}",
        "--heartbeat-interval", "10", "--election-timeout", "100",  # leader in ~0.1 s
        "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn",
    ]  # fmt: skip
    if tls is not None:
        argv += [
            "--cert-file", str(tls.server_cert), "--key-file", str(tls.server_key),
            "--trusted-ca-file", str(tls.ca), "--client-cert-auth",
        ]  # fmt: skip
    return argv


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM etcd's process group, SIGKILL after a grace period; reap it."""
    for sig, wait in ((signal.SIGTERM, _STOP_GRACE), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait_ready(server: EtcdServer, proc: subprocess.Popen[bytes], netns: str | None) -> None:
    tls = server.tls
    files = (
        None if tls is None else TLSFiles(str(tls.ca), str(tls.client_cert), str(tls.client_key))
    )
    client = Client(server.url(), [(server.host, server.port)], files, timeout=2.0)
    deadline = time.monotonic() + START_TIMEOUT
    try:
        with _in_netns(netns):
            while True:
                try:
                    client.call("kv/range", {"key": b64(b"/"), "count_only": True}, idempotent=True)
                    return
                except EtcdError as e:
                    failure = str(e)
                if proc.poll() is not None:
                    raise TopologyError(
                        f"etcd at {server.endpoint} exited with status {proc.returncode}:\n"
                        f"{server.log_tail()}"
                    )
                if time.monotonic() >= deadline:
                    raise TopologyError(
                        f"etcd at {server.endpoint}: not ready after {START_TIMEOUT:g} s "
                        f"({failure}):\n{server.log_tail()}"
                    )
                time.sleep(0.01)
    finally:
        client.close()


@contextlib.contextmanager
def etcd_server(
    tmp_path: Path,
    *,
    tls: TLSCerts | None = None,
    netns: str | None = None,
    host: str = "127.0.0.1",
) -> Iterator[EtcdServer]:
    """A fresh single-member etcd on ``host`` (free ports), data under ``tmp_path``;
    killed, and its data removed, when the block ends, even when it fails."""
    reason = etcd_missing()
    if reason is not None:
        raise TopologyError(reason)
    for attempt in range(3):  # a free port can be taken by another process meanwhile
        with _in_netns(netns):
            port, peer = _free_port(host), _free_port(host)
        directory = tmp_path / f"etcd-{port}"
        directory.mkdir(parents=True)
        data, logfile = directory / "data", directory / "etcd.log"
        argv = _argv(host, port, peer, data, tls)
        if netns is not None:
            argv = ["nsenter", f"--net=/run/netns/{netns}", *argv]
        with open(logfile, "wb") as out:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        server = EtcdServer(host, port, peer, data, logfile, proc.pid, tls)
        try:
            start = time.monotonic()
            _wait_ready(server, proc, netns)
            log.info(
                "etcd %s ready in %.2f s (pid %d, data %s)",
                server.endpoint, time.monotonic() - start, proc.pid, data,
            )  # fmt: skip
        except BaseException:
            exited = proc.poll()  # by itself: maybe its port was taken; try other ports
            _stop(proc)
            shutil.rmtree(directory, ignore_errors=True)
            if attempt == 2 or exited is None:
                raise
            continue
        try:
            yield server
        finally:
            _stop(proc)
            shutil.rmtree(directory, ignore_errors=True)
            log.info("etcd %s stopped, data removed", server.endpoint)
        return
