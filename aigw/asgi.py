"""The ASGI callables' types, and the one extension our server protocol hands the app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ConnectionSignals:
    """Handed to the app as `scope["extensions"]["aigw.connection"]`."""

    __slots__ = ("_callback", "body_timed_out")

    def __init__(self) -> None:
        self._callback: Callable[[], None] | None = None
        self.body_timed_out = False

    def on_disconnect(self, callback: Callable[[], None] | None) -> None:
        self._callback = callback

    def fire(self) -> None:
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()
