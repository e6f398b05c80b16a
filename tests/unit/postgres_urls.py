"""PostgreSQL URLs whose password holds an unencoded reserved character: urllib splits them
in the wrong place (it took "Xy9" for the port and the rest for the database), so every
piece of them may be secret. Port 9 on loopback: nothing answers there."""

from __future__ import annotations

MISREAD_URLS = (
    "postgresql://aigw:Xy9/Secr3tTail@127.0.0.1:9/test",
    "postgresql://aigw:Xy9#Secr3tTail@127.0.0.1:9/test",
    "postgresql://aigw:Xy9?Secr3tTail@127.0.0.1:9/test",
)
PASSWORD_PIECES = ("Xy9", "Secr3tTail")
