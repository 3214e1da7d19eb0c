"""An `https://` upstream with certificates made here (trustme): verified against the CA file given, refused
without it, a client certificate shown to an upstream that wants one (mTLS), and settings that cannot be used
refused at start with the variable named."""

from __future__ import annotations

import asyncio
import logging
import socket
import socketserver
import ssl
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import pytest
import trustme
from prometheus_client import CollectorRegistry

from guardrail.cli import main
from guardrail.sidecar import UpstreamTLS, build_sidecar
from tests.sidecar.servers import DEADLINE, HOST, serve_process, serving, write_policy

UPSTREAM_NAME = "upstream.internal"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def client_ca() -> trustme.CA:
    """The CA of the sidecar's client certificates, another than the upstream's."""
    return trustme.CA()


@pytest.fixture
def files(tmp_path: Path, ca: trustme.CA, client_ca: trustme.CA) -> dict[str, Path]:
    client = client_ca.issue_cert("guardrail-sidecar")
    paths = {
        "ca": tmp_path / "ca.pem",
        "cert": tmp_path / "client.pem",
        "key": tmp_path / "client.key",
        "both": tmp_path / "client-and-key.pem",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    client.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    client.private_key_pem.write_to_path(str(paths["key"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(paths["both"]))
    return paths


class TLSUpstream(socketserver.ThreadingTCPServer):
    """A TLS server on a free port, a thread per connection, with blocking sockets as many servers have:
    each request is answered with the name in the client's certificate, or `none`, on a kept-alive connection.
    (asyncio's own TLS server drops a refused client without the alert a TLS server sends.)"""

    daemon_threads = True
    block_on_close = False

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__((HOST, 0), _Answer)
        self.context = context
        self.connections = 0  # handshakes that succeeded
        self.heads: list[bytes] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Answer(socketserver.BaseRequestHandler):
    server: TLSUpstream

    def handle(self) -> None:
        connection = self.server.context.wrap_socket(self.request, server_side=True, do_handshake_on_connect=False)
        try:
            connection.do_handshake()
        except (ssl.SSLError, OSError):
            # Refused, and OpenSSL sent its alert. Closed only once the client has: a socket closed with the
            # client's request unread would reset the connection, and the alert might be lost on the way.
            with suppress(OSError), socket.fromfd(connection.fileno(), socket.AF_INET, socket.SOCK_STREAM) as raw:
                raw.settimeout(DEADLINE)
                while raw.recv(4096):
                    pass
            connection.close()
            return
        self.server.connections += 1
        alt_names: Any = (connection.getpeercert() or {}).get("subjectAltName", ())
        name = next((str(value) for kind, value in alt_names if kind == "DNS"), "none")
        with connection, connection.makefile("rb") as reader:
            while head := _read_head(reader):
                self.server.heads.append(head)
                connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(name), name.encode()))


def _read_head(reader: BinaryIO) -> bytes:
    """The next request head, or b"" when the client hung up."""
    lines = []
    while (line := reader.readline()) not in (b"\r\n", b""):
        lines.append(line)
    return b"".join(lines) if line else b""


@asynccontextmanager
async def tls_upstream(
    ca: trustme.CA, *names: str, client_ca: trustme.CA | None = None, tls_version: ssl.TLSVersion | None = None
) -> AsyncIterator[TLSUpstream]:
    """A TLS upstream with a certificate for `names` (127.0.0.1 by default) that `ca` signed; with `client_ca`,
    one that requires a client certificate that CA signed."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(names or (HOST,))).configure_cert(context)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        client_ca.configure_trust(context)
    if tls_version is not None:
        context.minimum_version = context.maximum_version = tls_version
    server = TLSUpstream(context)
    thread = threading.Thread(target=server.serve_forever, name="tls upstream", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        await asyncio.to_thread(server.shutdown)
        server.server_close()
        thread.join()


@asynccontextmanager
async def sidecar_to(server: TLSUpstream, tmp_path: Path, tls: UpstreamTLS | None) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the sidecar in front of `server`; its metrics in `REGISTRIES[client]`."""
    registry = CollectorRegistry()
    app = build_sidecar(
        write_policy(tmp_path / "policy.yaml"), f"https://{HOST}:{server.port}", registry=registry, tls=tls
    )
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        REGISTRIES[client] = registry
        yield client
    del REGISTRIES[client]


REGISTRIES: dict[httpx.AsyncClient, CollectorRegistry] = {}


def tls_errors(client: httpx.AsyncClient) -> float:
    return REGISTRIES[client].get_sample_value("guardrail_upstream_errors_total", {"kind": "tls"}) or 0.0


async def test_the_upstream_is_verified_with_the_ca_file(
    tmp_path: Path, ca: trustme.CA, files: dict[str, Path]
) -> None:
    async with tls_upstream(ca) as server, sidecar_to(server, tmp_path, UpstreamTLS(ca_file=files["ca"])) as client:
        answers = [await client.get("/anything") for _ in range(2)]
        ready = await client.get("/guardrail/readyz")
    assert [(answer.status_code, answer.text) for answer in answers] == [(200, "none")] * 2
    assert len(server.heads) == 2
    assert server.connections == 3  # the handshake at start, /readyz's, and one kept alive for both requests
    assert ready.json()["upstream"] == "ok"


async def test_without_the_ca_file_the_upstream_is_refused_with_502_and_a_log_naming_the_setting(
    tmp_path: Path, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="guardrail"):
        async with tls_upstream(ca) as server, sidecar_to(server, tmp_path, None) as client:
            response = await client.get("/anything")
            ready = await client.get("/guardrail/readyz")
            assert tls_errors(client) == 1
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"].startswith("The service behind the guardrail could not be reached over a trusted")
    assert "certificate" not in response.text.lower()  # the client is told nothing of the upstream's setup
    assert server.heads == []  # nothing of the request went to an upstream not trusted
    assert ready.status_code == 503
    assert ready.json()["upstream"] == "error: no trusted TLS connection to the upstream"
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    # Said at start (the first handshake), and again by the request it failed.
    assert [record.getMessage().split(":")[0] for record in errors] == [
        "no TLS with the upstream",
        "upstream tls error",
    ]
    for record in errors:
        assert "the upstream's certificate is not trusted" in record.getMessage()
        assert "set GUARDRAIL_UPSTREAM_CA_FILE to the CA certificates that sign it" in record.getMessage()


async def test_a_certificate_for_another_name_needs_the_server_name(
    tmp_path: Path, ca: trustme.CA, files: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    async with tls_upstream(ca, UPSTREAM_NAME) as server:
        async with sidecar_to(server, tmp_path, UpstreamTLS(ca_file=files["ca"])) as client:
            refused = await client.get("/anything")
        named = UpstreamTLS(ca_file=files["ca"], server_name=UPSTREAM_NAME)
        async with sidecar_to(server, tmp_path, named) as client:
            verified = await client.get("/anything")
    assert refused.status_code == 502
    assert "set GUARDRAIL_UPSTREAM_SERVER_NAME to a name it carries" in caplog.text
    assert verified.status_code == 200


@pytest.mark.parametrize("key_in_the_certificate_file", [False, True])
async def test_an_upstream_that_wants_a_client_certificate_gets_it(
    tmp_path: Path, ca: trustme.CA, client_ca: trustme.CA, files: dict[str, Path], key_in_the_certificate_file: bool
) -> None:
    tls = (
        UpstreamTLS(ca_file=files["ca"], client_cert=files["both"])
        if key_in_the_certificate_file
        else UpstreamTLS(ca_file=files["ca"], client_cert=files["cert"], client_key=files["key"])
    )
    async with tls_upstream(ca, client_ca=client_ca) as server, sidecar_to(server, tmp_path, tls) as client:
        response = await client.get("/anything")
    assert (response.status_code, response.text) == (200, "guardrail-sidecar")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_without_a_client_certificate_an_mtls_upstream_refuses_and_the_log_says_what_to_set(
    tmp_path: Path,
    ca: trustme.CA,
    client_ca: trustme.CA,
    files: dict[str, Path],
    caplog: pytest.LogCaptureFixture,
    version: ssl.TLSVersion,
) -> None:
    """TLS 1.2 refuses during the handshake; TLS 1.3 once it is over, with an alert as the answer."""
    other = trustme.CA().issue_cert("someone-else")  # a certificate the upstream's client CA did not sign
    other.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "other.pem"))
    async with tls_upstream(ca, client_ca=client_ca, tls_version=version) as server:
        for tls in (
            UpstreamTLS(ca_file=files["ca"]),
            UpstreamTLS(ca_file=files["ca"], client_cert=tmp_path / "other.pem"),
        ):
            caplog.clear()
            async with sidecar_to(server, tmp_path, tls) as client:
                response = await client.get("/anything")
                assert tls_errors(client) == 1
            assert response.status_code == 502
            assert response.json()["title"] == "Bad Gateway"
            assert "set GUARDRAIL_UPSTREAM_CLIENT_CERT and GUARDRAIL_UPSTREAM_CLIENT_KEY to" in caplog.text
    assert server.heads == []


@pytest.mark.parametrize(
    ("env", "says"),
    [
        (
            {"GUARDRAIL_UPSTREAM_CA_FILE": "{tmp}/missing.pem"},
            "GUARDRAIL_UPSTREAM_CA_FILE: cannot read {tmp}/missing.pem (No such file or directory); give a PEM file "
            "of the CA certificates that sign the upstream's certificate",
        ),
        (
            {"GUARDRAIL_UPSTREAM_CA_FILE": "{tmp}/policy.yaml"},
            "GUARDRAIL_UPSTREAM_CA_FILE: {tmp}/policy.yaml holds no PEM certificate",
        ),
        (
            {"GUARDRAIL_UPSTREAM_CLIENT_CERT": "{tmp}/nope.pem"},
            "GUARDRAIL_UPSTREAM_CLIENT_CERT: cannot read {tmp}/nope.pem (No such file or directory)",
        ),
        (
            {"GUARDRAIL_UPSTREAM_CLIENT_CERT": "{tmp}/client.pem", "GUARDRAIL_UPSTREAM_CLIENT_KEY": "{tmp}/nope.key"},
            "GUARDRAIL_UPSTREAM_CLIENT_KEY: cannot read {tmp}/nope.key (No such file or directory); give the PEM "
            "private key of the client certificate",
        ),
        (
            {"GUARDRAIL_UPSTREAM_CLIENT_CERT": "{tmp}/client.pem"},  # the key is in neither
            "GUARDRAIL_UPSTREAM_CLIENT_CERT: no PEM certificate with its private key in GUARDRAIL_UPSTREAM_CLIENT_CERT",
        ),
        (
            {"GUARDRAIL_UPSTREAM_CLIENT_KEY": "{tmp}/client.key"},
            "GUARDRAIL_UPSTREAM_CLIENT_KEY is set without GUARDRAIL_UPSTREAM_CLIENT_CERT",
        ),
        (
            {"GUARDRAIL_UPSTREAM_CA_FILE": "{tmp}/ca.pem", "GUARDRAIL_UPSTREAM": "http://127.0.0.1:9"},
            "the upstream's TLS settings are given, but the upstream is http://127.0.0.1:9: use an https:// URL",
        ),
    ],
)
def test_tls_settings_that_cannot_be_used_stop_the_start_naming_the_variable(
    tmp_path: Path,
    files: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    says: str,
) -> None:
    policy = write_policy(tmp_path / "policy.yaml")
    monkeypatch.setenv("GUARDRAIL_UPSTREAM", "https://127.0.0.1:9")
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(tmp=tmp_path))
    assert main(["serve", "--config", str(policy)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("guardrail serve: ")
    assert says.format(tmp=tmp_path) in err
    assert "Traceback" not in err


def test_guardrail_serve_reaches_an_mtls_upstream_with_the_settings_from_the_environment(
    tmp_path: Path, ca: trustme.CA, client_ca: trustme.CA, files: dict[str, Path]
) -> None:
    async def upstream_and_sidecar() -> list[tuple[int, str]]:
        async with tls_upstream(ca, UPSTREAM_NAME, client_ca=client_ca) as server:
            env = {
                "GUARDRAIL_UPSTREAM_CA_FILE": str(files["ca"]),
                "GUARDRAIL_UPSTREAM_CLIENT_CERT": str(files["cert"]),
                "GUARDRAIL_UPSTREAM_CLIENT_KEY": str(files["key"]),
                "GUARDRAIL_UPSTREAM_SERVER_NAME": UPSTREAM_NAME,
            }
            policy = str(write_policy(tmp_path / "policy.yaml"))
            with serve_process("--config", policy, "--upstream", f"https://{HOST}:{server.port}", env=env) as serve:
                await asyncio.to_thread(serve.wait_ready)
                async with httpx.AsyncClient(base_url=serve.url) as client:
                    answers = [await client.get("/anything") for _ in range(2)]
            return [(answer.status_code, answer.text) for answer in answers]

    assert asyncio.run(upstream_and_sidecar()) == [(200, "guardrail-sidecar")] * 2
