"""The one place where gateway errors become HTTP responses."""

from __future__ import annotations

import json

from aigw.context import Response
from aigw.errors import GatewayError
from aigw.headers import Headers


def error_body(status_code: int, message: str) -> bytes:
    return json.dumps({"statusCode": status_code, "message": message}).encode()


def error_response(exc: GatewayError) -> Response:
    headers = Headers([("content-type", "application/json")])
    for name, value in exc.headers:
        headers.add(name, value)
    return Response(exc.status_code, headers, error_body(exc.status_code, exc.message))
