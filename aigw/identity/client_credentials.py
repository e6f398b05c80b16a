"""OAuth 2.0 client credentials (RFC 6749 §4.4) against any identity provider's token
endpoint, authenticated by a client secret (from a secret named value) or by a client
assertion read from a file on every acquisition (a federated token that rotates, as the
Kubernetes service-account token does; RFC 7523)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aigw.identity.tokens import AccessToken, TokenUnavailable

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class ClientCredentialsProvider:
    kind = "client-credentials"

    def __init__(
        self,
        token_url: str,
        client_id: str,
        *,
        client_secret: str | None = None,
        client_assertion_file: str | None = None,
        timeout: float = 15.0,
    ) -> None:
        self.client_id: str | None = client_id
        self.token_url = token_url
        self._secret = client_secret
        self._assertion_file = client_assertion_file
        self._timeout = timeout

    def _form(self, scope: str) -> dict[str, str]:
        form = {"grant_type": "client_credentials", "client_id": self.client_id or ""}
        if scope:
            form["scope"] = scope
        if self._secret is not None:
            form["client_secret"] = self._secret
        elif self._assertion_file is not None:
            try:
                assertion = Path(self._assertion_file).read_text().strip()
            except OSError as exc:
                raise TokenUnavailable(
                    f"cannot read client assertion file {self._assertion_file}: {exc.strerror}"
                ) from None
            form["client_assertion_type"] = JWT_BEARER
            form["client_assertion"] = assertion
        return form

    async def token(self, resource: str) -> AccessToken:
        """`resource` is the scope to ask for (may be empty)."""
        import aiohttp  # here, not at import: only client-credentials backends need it

        # Read in a thread: the assertion file may sit on a slow volume.
        form = await asyncio.to_thread(self._form, resource)
        sent = time.time()
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout)) as s,
                # A redirect is not followed: a 307 would re-post the secret to another origin.
                s.post(
                    self.token_url,
                    data=form,
                    headers={"accept": "application/json"},
                    allow_redirects=False,
                ) as r,
            ):
                status = r.status
                try:
                    body = await r.json(content_type=None)
                except ValueError:
                    body = None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TokenUnavailable(
                f"token endpoint {self.token_url} unreachable: {type(exc).__name__}"
            ) from None
        if status != 200 or not isinstance(body, dict) or "access_token" not in body:
            # Only the OAuth error code: descriptions may echo what was sent.
            code = body.get("error") if isinstance(body, dict) else None
            raise TokenUnavailable(
                f"token endpoint {self.token_url} answered {status}"
                + (f" ({str(code)[:100]})" if code else "")
            )
        try:
            if "expires_on" in body:
                expires_on = float(body["expires_on"])
            else:
                expires_on = sent + float(body.get("expires_in", 3600))
        except (TypeError, ValueError):
            raise TokenUnavailable("token endpoint sent an invalid expiry") from None
        return AccessToken(str(body["access_token"]), expires_on)
