"""A real OpenID Connect provider on loopback for the validate-jwt end-to-end tests.

`OidcProvider` runs `tests/oidc/server.mjs` (the `oidc-provider` npm package, pinned in
tests/oidc/package.json) under Node.js. It issues client-credentials access tokens as JWTs,
serves discovery and JWKS, rotates its signing keys on request, counts JWKS and discovery
fetches, and can be stopped and started again on the same port with the same keys.

    with OidcProvider(tmp_path) as idp:
        token = idp.token("app-prod")            # RS256, aud "api://aigw", roles ["ProdWorkload"]
        es256 = idp.token("app-chatbot", alg="ES256")
        idp.rotate_keys(keep_old=False)
"""

from __future__ import annotations

import base64
import functools
import json
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from tests.support import REPO, Process, free_port

OIDC_DIR = REPO / "tests" / "oidc"
SERVER = OIDC_DIR / "server.mjs"

DEFAULT_AUDIENCE = "api://aigw"
DEFAULT_SCOPES = ("chat", "embeddings")
MIN_NODE = (20, 18)

TENANT_ID = "6f1c2a4e-3b7d-4c59-9e21-0a8d5b7f3c10"


@dataclass(frozen=True, slots=True)
class OidcClient:
    """A confidential client of the provider; `claims` go into every access token it gets."""

    client_id: str
    client_secret: str
    claims: Mapping[str, Any] = field(default_factory=dict)

    @property
    def oid(self) -> str:
        return str(self.claims["oid"])


APP_PROD = OidcClient(
    "app-prod",
    "app-prod-secret",
    {"roles": ["ProdWorkload"], "oid": "1d3e5f70-8a9b-4c0d-9e1f-2a3b4c5d6e01", "tid": TENANT_ID},
)
APP_CHATBOT = OidcClient(
    "app-chatbot",
    "app-chatbot-secret",
    {"roles": ["Chatbot"], "oid": "1d3e5f70-8a9b-4c0d-9e1f-2a3b4c5d6e02", "tid": TENANT_ID},
)
APP_NONE = OidcClient(
    "app-none",
    "app-none-secret",
    {"oid": "1d3e5f70-8a9b-4c0d-9e1f-2a3b4c5d6e03", "tid": TENANT_ID},
)
DEFAULT_CLIENTS = (APP_PROD, APP_CHATBOT, APP_NONE)


class OidcTokenError(RuntimeError):
    """The token endpoint refused; `status` and `body` are its answer."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"token endpoint answered {status}: {body}")
        self.status = status
        self.body = body


class OidcProvider:
    """The node process and what tests ask of it. Starts on construction."""

    def __init__(
        self,
        workdir: Path,
        *,
        clients: Sequence[OidcClient] = DEFAULT_CLIENTS,
        audience: str = DEFAULT_AUDIENCE,
        scopes: Sequence[str] = DEFAULT_SCOPES,
        access_token_ttl: int = 3600,
        port: int | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        ensure_node_modules()
        self.workdir = workdir
        self.port = port or free_port()
        self.clients = {client.client_id: client for client in clients}
        self.audience = audience
        self.start_timeout = start_timeout
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.discovery_url = f"{self.issuer}/.well-known/openid-configuration"
        self.jwks_uri = f"{self.issuer}/jwks"
        self.token_endpoint = f"{self.issuer}/token"
        self.config_path = workdir / f"oidc-{self.port}.json"
        # The keys live in a file so that a restart keeps them, as a real provider's do.
        self.keys_path = workdir / f"oidc-{self.port}-keys.json"
        self.config_path.write_text(
            json.dumps(
                {
                    "audience": audience,
                    "scopes": list(scopes),
                    "access_token_ttl": access_token_ttl,
                    "clients": [
                        {
                            "client_id": c.client_id,
                            "client_secret": c.client_secret,
                            "claims": dict(c.claims),
                        }
                        for c in clients
                    ],
                }
            )
        )
        self._http = httpx.Client(timeout=10)
        # Counts of the processes already stopped, so the fetch counters span restarts.
        self._past_counts: dict[str, int] = {}
        self._process: Process | None = None
        self._runs = 0
        try:
            self.start()
        except BaseException:
            self._http.close()
            raise

    # --- lifecycle --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.popen.poll() is None

    def start(self) -> None:
        """Start the node process on this provider's port (again, after `stop`), same keys."""
        if self.running:
            return
        self._runs += 1
        self._process = Process(
            [
                node_binary(),
                str(SERVER),
                "--port",
                str(self.port),
                "--config",
                str(self.config_path),
                "--keys",
                str(self.keys_path),
            ],
            self.workdir,
            f"oidc-{self.port}-{self._runs}",
        )
        self._wait_ready()

    def stop(self) -> None:
        """Stop the node process (SIGTERM, then SIGKILL); the port stops answering."""
        if self._process is None:
            return
        if self.running:
            try:
                for name, count in self._current_stats().items():
                    if isinstance(count, int):
                        self._past_counts[name] = self._past_counts.get(name, 0) + count
            except httpx.HTTPError:
                pass  # a process that no longer answers has nothing to add
        self._process.stop()
        self._process = None

    def close(self) -> None:
        self.stop()
        self._http.close()

    def __enter__(self) -> OidcProvider:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _wait_ready(self) -> None:
        # Readiness through the test endpoint, so that waiting is no discovery fetch.
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.popen.poll() is not None:
                raise RuntimeError(
                    f"oidc provider exited with {self._process.popen.returncode}: "
                    f"{self._process.stderr()}"
                )
            try:
                if self._http.get(f"{self.issuer}/__test/stats", timeout=0.5).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"oidc provider did not answer within {self.start_timeout}s")

    # --- tokens -----------------------------------------------------------------------------

    def token(
        self,
        client_id: str = APP_PROD.client_id,
        scope: str | None = None,
        resource: str | None = None,
        *,
        alg: str = "RS256",
        ttl: int | None = None,
        claims: Mapping[str, Any] | None = None,
    ) -> str:
        """An access token (a JWT) from the client-credentials grant, client_secret_basic.

        `resource` is the resource indicator that becomes `aud` (default: `audience`). `alg` is
        any of RS256, RS384, RS512, PS256, PS384, PS512, ES256. `ttl` sets its lifetime in
        seconds. `claims` are set on the payload after the provider built it, still signed by the
        provider's key (a None value removes that claim): for expired, not-yet-valid or
        wrong-issuer tokens.
        """
        client = self.clients[client_id]
        form = {"grant_type": "client_credentials"}
        if scope is not None:
            form["scope"] = scope
        form["resource"] = resource or self.audience
        headers = {"x-test-alg": alg}
        if ttl is not None:
            headers["x-test-ttl"] = str(ttl)
        if claims:
            headers["x-test-claims"] = json.dumps(claims)
        response = self._http.post(
            self.token_endpoint,
            data=form,
            headers=headers,
            auth=(client.client_id, client.client_secret),
        )
        if response.status_code != 200:
            raise OidcTokenError(response.status_code, response.text)
        return str(response.json()["access_token"])

    # --- keys and counters ------------------------------------------------------------------

    def rotate_keys(self, *, keep_old: bool = True) -> dict[str, str]:
        """Sign with new keys (one RSA, one EC P-256) from now on; returns their kids by key
        type. `keep_old` keeps the keys published so far in JWKS (a rollover); otherwise they
        are gone from JWKS at once."""
        response = self._http.post(f"{self.issuer}/__test/rotate", json={"keep_old": keep_old})
        response.raise_for_status()
        return dict(response.json()["signing_kids"])

    @property
    def signing_kids(self) -> dict[str, str]:
        """The kid that signs, by key type: {"RSA": ..., "EC": ...}. Not a JWKS fetch."""
        return dict(self._current_stats()["signing_kids"])

    @property
    def published_kids(self) -> list[str]:
        """The kids in JWKS right now, signing ones first. Not a JWKS fetch."""
        return list(self._current_stats()["published_kids"])

    @property
    def jwks_fetches(self) -> int:
        """Requests to the JWKS endpoint since this provider first started, across restarts."""
        return self._count("jwks_fetches")

    @property
    def discovery_fetches(self) -> int:
        """Requests for the discovery document since this provider first started."""
        return self._count("discovery_fetches")

    @property
    def token_requests(self) -> int:
        return self._count("token_requests")

    def _count(self, name: str) -> int:
        current = int(self._current_stats()[name]) if self.running else 0
        return self._past_counts.get(name, 0) + current

    def _current_stats(self) -> dict[str, Any]:
        response = self._http.get(f"{self.issuer}/__test/stats")
        response.raise_for_status()
        return dict(response.json())

    # --- diagnostics ------------------------------------------------------------------------

    def stderr(self) -> str:
        """What the running (or last) node process wrote to stderr."""
        path = self.workdir / f"oidc-{self.port}-{self._runs}.err"
        return path.read_text(errors="replace") if path.exists() else ""


def decode_jwt(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and payload of a compact JWS, unverified: for assertions in tests only."""
    header, payload, _signature = token.split(".")
    return _b64_json(header), _b64_json(payload)


def _b64_json(segment: str) -> dict[str, Any]:
    padded = segment + "=" * (-len(segment) % 4)
    value = json.loads(base64.urlsafe_b64decode(padded))
    assert isinstance(value, dict)
    return value


@functools.cache
def node_binary() -> str:
    """Node.js, checked once: oidc-provider 9 needs 20.18 or later (`URL.parse`, for one)."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed: the OIDC provider needs Node.js >= 20.18")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    found = tuple(int(part) for part in version.stdout.strip().lstrip("v").split(".")[:2])
    if found < MIN_NODE:
        raise RuntimeError(f"the OIDC provider needs Node.js >= 20.18, found {version.stdout}")
    return node


def ensure_node_modules() -> None:
    """Install tests/oidc's locked packages when they are missing or not the pinned version,
    so that a plain `pytest` works on a fresh checkout (CI runs `npm ci` beforehand)."""
    pinned = json.loads((OIDC_DIR / "package.json").read_text())["dependencies"]["oidc-provider"]
    installed = OIDC_DIR / "node_modules" / "oidc-provider" / "package.json"
    if installed.exists() and json.loads(installed.read_text())["version"] == pinned:
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed: run `npm ci` in tests/oidc")
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--silent"],
        cwd=OIDC_DIR,
        check=True,
        timeout=300,
    )
