"""A backend URL's origin and path prefix; a request's bytes on the wire."""

from __future__ import annotations

import pytest

from aigw.errors import GatewayError
from aigw.upstream.client import encode_request, origin_of
from aigw.upstream.pool import Origin


@pytest.mark.parametrize(
    ("url", "origin", "prefix"),
    [
        ("http://h:80/x", Origin("h", 80, False, "h"), "/x"),
        ("http://h/x/", Origin("h", 80, False, "h"), "/x"),
        ("https://h:443/openai/v1/", Origin("h", 443, True, "h"), "/openai/v1"),
        ("https://h", Origin("h", 443, True, "h"), ""),
        ("http://h:8080", Origin("h", 8080, False, "h:8080"), ""),
        ("https://h:80/", Origin("h", 80, True, "h:80"), ""),  # 80 is not https's default
        ("http://[::1]:8080/v1", Origin("::1", 8080, False, "[::1]:8080"), "/v1"),
        ("http://[::1]:80/", Origin("::1", 80, False, "[::1]"), ""),
        ("http://[::1]/", Origin("::1", 80, False, "[::1]"), ""),
    ],
)
def test_origin_and_path_prefix_of_a_url(url: str, origin: Origin, prefix: str) -> None:
    assert origin_of(url) == (origin, prefix)


@pytest.mark.parametrize(
    "url", ["http://user:secret@h/", "http://user@h/", "https://:secret@h:8443/x", "/relative"]
)
def test_a_url_with_credentials_or_without_a_host_is_refused(url: str) -> None:
    with pytest.raises(ValueError):
        origin_of(url)


def test_a_get_without_a_body_sends_no_length() -> None:
    data = encode_request("GET", "/v1/models?x=1", "h:8080", [("Accept", "*/*")], None)
    assert data == b"GET /v1/models?x=1 HTTP/1.1\r\nhost: h:8080\r\nAccept: */*\r\n\r\n"


def test_a_body_is_announced_by_its_length_and_follows_the_head() -> None:
    body = b'{"model": "m"}'
    data = encode_request("POST", "/chat", "h", [("content-type", "application/json")], body)
    assert data == (
        b"POST /chat HTTP/1.1\r\nhost: h\r\ncontent-type: application/json\r\n"
        b"content-length: 14\r\n\r\n" + body
    )


def test_an_empty_body_is_announced_as_zero_length() -> None:
    data = encode_request("POST", "/", "h", [], b"")
    assert data == b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 0\r\n\r\n"


def test_header_order_case_and_repeats_are_kept() -> None:
    headers = [("X-B", "2"), ("x-a", "1"), ("X-B", "3")]
    data = encode_request("GET", "/", "h", headers, None)
    assert data == b"GET / HTTP/1.1\r\nhost: h\r\nX-B: 2\r\nx-a: 1\r\nX-B: 3\r\n\r\n"


@pytest.mark.parametrize(
    "header",
    [
        ("x-a", "one\r\nx-injected: yes"),
        ("x-a", "one\nx-injected: yes"),
        ("x-a", "one\rtwo"),
        ("x-a", "one\x00two"),
        ("x-a\r\nx-injected", "yes"),
    ],
    ids=["crlf", "lf", "cr", "nul", "crlf-in-name"],
)
def test_a_header_that_would_split_the_request_is_refused(header: tuple[str, str]) -> None:
    with pytest.raises(GatewayError) as raised:
        encode_request("GET", "/", "h", [("x-ok", "1"), header], None)
    assert raised.value.status_code == 500


def test_a_client_header_in_latin_1_goes_back_as_the_same_bytes() -> None:
    # The ASGI server decodes header bytes as latin-1: encoding back gives the client's bytes.
    data = encode_request("GET", "/", "h", [("x-name", "caf\xe9")], None)
    assert b"x-name: caf\xe9\r\n" in data


def test_text_beyond_latin_1_is_sent_as_utf_8() -> None:
    data = encode_request("GET", "/", "h", [("x-price", "5 €")], None)
    assert b"x-price: 5 \xe2\x82\xac\r\n" in data


def test_a_client_header_keeps_its_bytes_next_to_a_header_beyond_latin_1() -> None:
    # Only the header beyond latin-1 (a policy's text) goes as UTF-8; the client's latin-1
    # header next to it keeps its bytes (b"caf\xe9", not b"caf\xc3\xa9").
    headers = [("x-name", "caf\xe9"), ("x-price", "5 €")]
    data = encode_request("GET", "/", "h", headers, None)
    assert b"x-name: caf\xe9\r\n" in data
    assert b"x-price: 5 \xe2\x82\xac\r\n" in data
