"""A local Microsoft Entra stand-in for the backend-authentication tests, on 127.0.0.1:

- the App Service / Container Apps managed-identity endpoint as azure-identity calls it:
  `GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=…[&client_id=…]` with the
  `X-IDENTITY-HEADER` secret, answering `{"access_token", "expires_on", "resource",
  "token_type"}` (`expires_on` in Unix seconds);
- the Azure Instance Metadata Service (IMDS) as azure-identity calls it when
  `AZURE_POD_IDENTITY_AUTHORITY_HOST` points at this server: `GET /metadata/identity/oauth2/
  token?api-version=2018-02-01&resource=…[&client_id=…]` with `Metadata: true` (else 400, as
  IMDS does), answering `{"access_token", "client_id", "expires_in", "expires_on",
  "ext_expires_in", "not_before", "resource", "token_type"}` (numbers as strings, as IMDS);
- an OAuth 2.0 token endpoint (`POST /{tenant}/oauth2/v2.0/token`, or any path ending in
  `/token`) for workload identity and client credentials, answering
  `{"access_token", "expires_in", "token_type"}`; optionally over TLS with a `trustme` CA.

Tokens are `tok-{n}-{resource or scope}-{client id}`; every call is recorded, per-resource
lifetimes, failures (`down`) and delays are set by the test.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

IDENTITY_HEADER = "test-identity-header-secret"
IMDS_TOKEN_PATH = "/metadata/identity/oauth2/token"
# What azure-identity's managed identity looks at before choosing IMDS: all unset (empty),
# so the IMDS tests are not diverted by the machine's (or another test's) environment.
OTHER_MANAGED_IDENTITY_VARS = (
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "AZURE_FEDERATED_TOKEN_FILE",
)


def imds_env(server_url: str) -> dict[str, str]:
    """Environment for a process whose managed identity is IMDS at `server_url`."""
    env = dict.fromkeys(OTHER_MANAGED_IDENTITY_VARS, "")
    return {**env, "AZURE_POD_IDENTITY_AUTHORITY_HOST": server_url}


@dataclass
class Call:
    kind: str  # "msi" (App Service), "imds" or "oauth"
    resource: str  # the resource (MSI) or the scope (OAuth)
    client_id: str | None
    params: dict[str, str]
    headers: dict[str, str]


@dataclass
class IdentityEndpoint:
    lifetime: dict[str, float] = field(default_factory=dict)  # by resource/scope; else 3600
    down: set[str] = field(default_factory=set)  # resources/scopes answered with 503
    delay: dict[str, float] = field(default_factory=dict)  # seconds before answering
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hits(self, resource: str) -> int:
        with self.lock:
            return sum(1 for call in self.calls if call.resource == resource)

    def _issue(self, call: Call) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.calls.append(call)
            number = len(self.calls)
        time.sleep(self.delay.get(call.resource, 0))
        if call.resource in self.down:
            return 503, {"error": "temporarily_unavailable"}
        lifetime = self.lifetime.get(call.resource, 3600)
        token = f"tok-{number}-{call.resource}-{call.client_id or 'system'}"
        if call.kind == "msi":
            expires_on = str(int(time.time() + lifetime))
            body = {"access_token": token, "expires_on": expires_on, "token_type": "Bearer"}
            return 200, {**body, "resource": call.resource}
        if call.kind == "imds":
            now = int(time.time())
            return 200, {
                "access_token": token,
                "client_id": call.client_id or "system-assigned-client-id",
                "expires_in": str(int(lifetime)),
                "expires_on": str(now + int(lifetime)),
                "ext_expires_in": str(int(lifetime)),
                "not_before": str(now),
                "resource": call.resource,
                "token_type": "Bearer",
            }
        return 200, {"access_token": token, "expires_in": int(lifetime), "token_type": "Bearer"}


def _handler(endpoint: IdentityEndpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            params = dict(parse_qsl(url.query))
            headers = {k.lower(): v for k, v in self.headers.items()}
            if url.path == IMDS_TOKEN_PATH:
                self._imds(params, headers)
                return
            if headers.get("x-identity-header") != IDENTITY_HEADER or "resource" not in params:
                self._send(400, {"error": "invalid_request"})
                return
            call = Call("msi", params["resource"], params.get("client_id"), params, headers)
            self._send(*endpoint._issue(call))

        def _imds(self, params: dict[str, str], headers: dict[str, str]) -> None:
            if headers.get("metadata") != "true":
                # IMDS refuses requests without it (a guard against SSRF through proxies).
                self._send(400, {"error": "invalid_request", "error_description": "Metadata"})
                return
            if params.get("api-version") is None or "resource" not in params:
                self._send(400, {"error": "invalid_request"})
                return
            call = Call("imds", params["resource"], params.get("client_id"), params, headers)
            self._send(*endpoint._issue(call))

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            form = dict(parse_qsl(self.rfile.read(length).decode()))
            headers = {k.lower(): v for k, v in self.headers.items()}
            if not urlsplit(self.path).path.endswith("/token"):
                self._send(404, {"error": "not_found"})
                return
            if form.get("grant_type") != "client_credentials":
                self._send(400, {"error": "unsupported_grant_type"})
                return
            scope = form.get("scope", "")
            call = Call("oauth", scope, form.get("client_id"), {**form, "path": self.path}, headers)
            self._send(*endpoint._issue(call))

    return Handler


class IdentityServer:
    """Serves an `IdentityEndpoint` on loopback; with `tls_dir`, over HTTPS with a fresh CA
    whose certificate is written to `tls_dir / "ca.pem"` (`ca_file`)."""

    def __init__(self, endpoint: IdentityEndpoint, tls_dir: Path | None = None) -> None:
        self.endpoint = endpoint
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(endpoint))
        self.server.daemon_threads = True
        self.ca_file: Path | None = None
        scheme = "http"
        if tls_dir is not None:
            import trustme

            ca = trustme.CA()
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.ca_file = tls_dir / "ca.pem"
            ca.cert_pem.write_to_path(str(self.ca_file))
            scheme = "https"
        self.port = self.server.server_address[1]
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        # A short poll interval: `stop` (shutdown) waits for it.
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
