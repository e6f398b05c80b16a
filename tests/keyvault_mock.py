"""A local Azure Key Vault (the secrets REST API over TLS, with the bearer challenge) and an
App Service style managed-identity endpoint, for the real `azure-keyvault-secrets` client.

The client checks that the challenge's resource is a parent domain of the vault's host; for
`https://127.0.0.1:PORT` the vault answers with resource `https://0.0.1:PORT`, which passes
the check the same way `vault.azure.net` does for `myvault.vault.azure.net`.
"""

from __future__ import annotations

import json
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trustme

IDENTITY_HEADER = "test-identity-header"
TOKEN = "kv-access-token-0123456789"


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


@dataclass
class Calls:
    tokens: list[dict[str, list[str]]] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class IdentityEndpoint:
    """`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`, as on App Service and Container Apps."""

    def __init__(self) -> None:
        self.calls = Calls()
        calls = self.calls

        class Handler(_Quiet):
            def do_GET(self) -> None:
                if self.headers.get("x-identity-header") != IDENTITY_HEADER:
                    self._json(401, {"error": "bad identity header"})
                    return
                query = parse_qs(urlsplit(self.path).query)
                with calls.lock:
                    calls.tokens.append(query)
                resource = query.get("resource", [""])[0]
                body = {
                    "access_token": TOKEN,
                    "expires_on": "4102444800",  # 2100
                    "resource": resource,
                    "token_type": "Bearer",
                }
                self._json(200, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/msi/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def env(self) -> dict[str, str]:
        return {"IDENTITY_ENDPOINT": self.url, "IDENTITY_HEADER": IDENTITY_HEADER}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class KeyVaultMock:
    """`GET /secrets/{name}?api-version=…` → `{"value", "id"}`; 401 with the challenge first."""

    def __init__(self, workdir: Path, port: int = 0) -> None:
        self.secrets: dict[str, str] = {}
        self.calls = Calls()
        self.ca = trustme.CA()
        self.ca_file = workdir / "test-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1").configure_cert(context)
        self._context = context
        self._port = port
        self.server: ThreadingHTTPServer | None = None
        self.start()

    def start(self) -> None:
        mock = self

        class Handler(_Quiet):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                port = self.server.server_address[1]
                if self.headers.get("authorization") != f"Bearer {TOKEN}":
                    challenge = (
                        'Bearer authorization="https://login.microsoftonline.com/'
                        f'00000000-0000-0000-0000-000000000000", resource="https://0.0.1:{port}"'
                    )
                    self._json(
                        401, {"error": {"code": "Unauthorized"}}, {"www-authenticate": challenge}
                    )
                    return
                parts = url.path.strip("/").split("/")
                if len(parts) < 2 or parts[0] != "secrets" or "api-version" not in url.query:
                    self._json(400, {"error": {"code": "BadParameter"}})
                    return
                with mock.calls.lock:
                    mock.calls.secrets.append(parts[1])
                value = mock.secrets.get(parts[1])
                if value is None:
                    self._json(404, {"error": {"code": "SecretNotFound", "message": "not found"}})
                    return
                vault = f"https://127.0.0.1:{port}"
                body = {"value": value, "id": f"{vault}/secrets/{parts[1]}/0123456789abcdef"}
                self._json(200, {**body, "attributes": {"enabled": True}})

        self.server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self.server.daemon_threads = True
        self.server.socket = self._context.wrap_socket(self.server.socket, server_side=True)
        self._port = self.server.server_address[1]
        self.url = f"https://127.0.0.1:{self._port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Unreachable from now on (connections refused) until `start` again, on the same port."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def env(self) -> dict[str, str]:
        return {"SSL_CERT_FILE": str(self.ca_file), "REQUESTS_CA_BUNDLE": str(self.ca_file)}
