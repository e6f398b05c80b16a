"""https origins: the backend's certificate is checked against the system trust store
(SSL_CERT_FILE here, pointing at a test CA), by IP address or host name."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from aigw.errors import BackendConnectionFailure
from aigw.upstream.pool import default_tls_context
from tests.unit.upstream.scripted_server import answer_each, serving, with_length
from tests.unit.upstream.sending import Clients, body_of, send


@pytest.fixture
def server_tls() -> tuple[trustme.CA, ssl.SSLContext]:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return ca, context


@pytest.fixture
def fresh_trust_store() -> Iterator[None]:
    """The client's TLS context is built once: rebuild it for this test's SSL_CERT_FILE."""
    default_tls_context.cache_clear()
    yield
    default_tls_context.cache_clear()


def trust(ca: trustme.CA, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca.cert_pem.write_to_path(str(path))
    monkeypatch.setenv("SSL_CERT_FILE", str(path))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
@pytest.mark.usefixtures("fresh_trust_store")
async def test_a_backend_with_a_trusted_certificate_is_reached_over_tls(
    clients: Clients,
    server_tls: tuple[trustme.CA, ssl.SSLContext],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    host: str,
) -> None:
    ca, context = server_tls
    trust(ca, tmp_path / "ca.pem", monkeypatch)
    async with serving(answer_each(with_length(b"secure")), tls=context) as server:
        client = clients(server.url("https", host))
        assert await body_of(await send(client)) == b"secure"
        assert await body_of(await send(client)) == b"secure"
        assert server.connections == 1
        assert server.requests[0].startswith(b"GET / HTTP/1.1\r\nhost: %s:" % host.encode())


@pytest.mark.usefixtures("fresh_trust_store")
async def test_a_certificate_from_an_untrusted_ca_is_a_connection_failure(
    clients: Clients,
    server_tls: tuple[trustme.CA, ssl.SSLContext],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, context = server_tls
    trust(trustme.CA(), tmp_path / "other-ca.pem", monkeypatch)
    async with serving(answer_each(with_length(b"secure")), tls=context) as server:
        client = clients(server.url("https"))
        with pytest.raises(BackendConnectionFailure):
            await send(client)
        assert client.pool.in_use == 0
        assert server.requests == []
