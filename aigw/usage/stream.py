"""`StreamUsage`: usage and completion text read from a server-sent-event stream in passing.

The stream is parsed as the SSE spec says: lines end with CRLF, LF or CR, a blank line ends
an event, `:` starts a comment, and only `data` (and `event`) fields matter here. Chunks may
split it anywhere, a CRLF included.

What is read:
- Chat Completions and Completions: `usage` from any chunk that has one (with
  `stream_options.include_usage` the last chunk has `"choices": []` and the usage), text from
  `choices[].delta.content` / `refusal` / `reasoning_content`, tool call names and argument
  deltas, and `choices[].text`; `done` at `data: [DONE]`.
- Responses API: text from `response.output_text.delta`, `response.refusal.delta`,
  `response.function_call_arguments.delta` and `response.reasoning_summary_text.delta`, and
  a function call's name from `response.output_item.added`; usage from `response.usage` of
  the terminal event (`response.completed`, and also `response.incomplete` /
  `response.failed`, which are billed too), which also sets `done`.

`completion` reads the same text from a non-streamed answer: the two are kept in step.

Stripping (Chat Completions and Completions only): when the gateway asked for usage the
client did not, the event whose payload has `usage` and no `choices` is removed, blank line
included; a chunk with `choices` that also carries the usage (some servers put it on the last
content chunk) or `"usage": null` keeps every byte but that top-level member (an unterminated
last event too); every other byte passes unchanged. Only the incomplete event at the end of
what was fed is held back, never a complete one. Without stripping `feed` returns its input itself.

Cost: a stream that is not being stripped is kept as it is and read only when its usage
(or text) is asked for, after the client has its answer; a chunk without usage is kept
unparsed until its text is needed (only when the backend reported no usage).

Memory is bounded: a held-back tail above `MAX_HELD_BYTES` stops stripping for the rest of
the stream (the bytes pass through), an event above `MAX_EVENT_BYTES` is not parsed, and the
completion text is kept up to `MAX_COMPLETION_CHARS`. Each is logged once per stream.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Final, Literal

from aigw.usage.extract import chat_usage, responses_usage
from aigw.usage.model import Usage

log = logging.getLogger("aigw.usage")

MAX_HELD_BYTES: Final = 1 << 20
# Large enough for a Responses API `response.completed`, which repeats the whole output.
MAX_EVENT_BYTES: Final = 8 << 20
MAX_COMPLETION_CHARS: Final = 4 << 20
# Raw bytes kept per stream to read later (chunks not parsed yet, a stream not read yet);
# beyond them, chunks are read as they come.
MAX_DEFERRED_BYTES: Final = 1 << 20
MAX_UNREAD_BYTES: Final = 1 << 20

_LINE_END: Final = re.compile(rb"\r\n|\r|\n")
_STRIPPABLE: Final = frozenset({"chat-completions", "completions"})
_RESPONSES_DELTAS: Final = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_summary_text.delta",
    }
)
_RESPONSES_TERMINAL: Final = frozenset(
    {"response.completed", "response.incomplete", "response.failed"}
)

# Where the LF of a CRLF split across two chunks goes: with the line its CR ended, which was
# either still part of the held event, or ended an event that was sent or dropped.
_LfRoute = Literal["none", "held", "out", "drop"]


class StreamUsage:
    def __init__(self, operation: str, strip_usage_chunk: bool) -> None:
        self.operation = operation
        self._stripping = strip_usage_chunk and operation in _STRIPPABLE
        self._usage: Usage | None = None
        self._done = False
        self._line = bytearray()  # the incomplete line (empty once its event is oversized)
        self._line_seen = 0  # bytes of the incomplete line, kept or not
        self._data: list[bytes] = []
        self._data_bytes = 0
        self._event_type = ""
        self._oversized = False
        self._pending_lf: _LfRoute = "none"
        self._held = bytearray()  # bytes of the incomplete event, when stripping
        self._null_usage = False  # the event being held carries a top-level "usage": null
        self._usage_member = False  # ... or choices and the usage: its copy goes without it
        # Chunks passed on unread (not stripping), and whether the stream ended after them.
        self._unread: list[bytes] = []
        self._unread_bytes = 0
        self._ended = False
        # Completion text, and chunks not parsed yet (their text is read when asked for).
        self._text: list[str | bytes] = []
        self._text_chars = 0
        self._deferred_bytes = 0
        self._logged: set[str] = set()

    @property
    def usage(self) -> Usage | None:
        """The last valid usage the backend reported, once seen."""
        if self._unread and self._ended and self._usage is None:
            found = _usage_near_end(b"".join(self._unread), self.operation)
            if found is not None:
                self._usage = found  # the rest stays unread until its text is asked for
                return found
        self._catch_up()
        return self._usage

    @property
    def done(self) -> bool:
        """The backend ended the stream (`data: [DONE]` or a terminal Responses event)."""
        self._catch_up()
        return self._done

    @property
    def buffered_bytes(self) -> int:
        """Bytes kept for the incomplete event (for diagnostics and tests)."""
        self._catch_up()
        return len(self._held) + len(self._line) + self._data_bytes

    def completion_text(self) -> str:
        """The streamed completion text so far (up to `MAX_COMPLETION_CHARS`)."""
        self._catch_up()
        pieces, self._text, self._text_chars = self._text, [], 0
        for piece in pieces:
            if isinstance(piece, str):
                self._add_text(piece)
            else:  # a chunk kept unparsed
                self._chunk_text(piece)
        self._deferred_bytes = 0
        text = "".join(piece for piece in self._text if isinstance(piece, str))
        self._text = [text] if text else []
        return text

    def _chunk_text(self, data: bytes) -> None:
        try:
            payload = json.loads(data)
        except (ValueError, RecursionError):
            return
        choices = payload.get("choices") if isinstance(payload, dict) else None
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict):
                self._choice_text(choice)

    def feed(self, chunk: bytes) -> bytes:
        """Read `chunk`; returns what to send to the client now."""
        if not self._stripping:
            # Nothing to change in passing: kept as it is and read when the usage is asked
            # for, after the client has its answer (up to a bound, then read as it comes).
            if self._unread_bytes + len(chunk) <= MAX_UNREAD_BYTES:
                self._unread.append(chunk)
                self._unread_bytes += len(chunk)
            else:
                self._catch_up()
                self._read(chunk)
            return chunk
        out = bytearray()
        if not self._whole_events(chunk, out):
            self._scan(chunk, out)
        if len(self._held) > MAX_HELD_BYTES:
            self._log_once(
                "an event outgrew %d bytes: usage events are no longer removed", MAX_HELD_BYTES
            )
            out += self._held
            self._held.clear()
            self._stripping = False
        return bytes(out)

    def flush(self) -> bytes:
        """At the end of the stream: the held-back bytes of an unterminated last event.

        Its data is still read for usage (leniently: the SSE spec would discard it), and a
        usage-only event is removed as it would have been with its blank line.
        """
        if not self._stripping:
            self._ended = True  # read with the rest of what is unread
            return b""
        return self._flush()

    def _client_copy(self, event: bytes | bytearray) -> bytes | bytearray:
        """The event as the client gets it: without the top-level `usage` it did not ask for."""
        if self._null_usage:
            return _without_null_usage(event)
        return _without_usage(event) if self._usage_member else event

    def _read(self, chunk: bytes) -> None:
        if not self._whole_events(chunk, None):
            self._scan(chunk, None)

    def _catch_up(self) -> None:
        if self._unread:
            chunks, self._unread, self._unread_bytes = self._unread, [], 0
            for chunk in chunks:
                self._read(chunk)
        if self._ended:
            self._ended = False
            self._flush()

    def _flush(self) -> bytes:
        if self._line_seen:
            self._line_done(b"")
        dropped = self._end_event()
        held = bytes(self._client_copy(self._held))
        self._held.clear()
        self._null_usage = self._usage_member = False
        self._pending_lf = "none"
        return b"" if dropped and self._stripping else held

    def _whole_events(self, chunk: bytes, out: bytearray | None) -> bool:
        """The common case, read without the line-by-line parser: nothing held from before,
        and `chunk` is whole events of one `data:` line each, LF-terminated. False (nothing
        read) for anything else."""
        if (
            self._line_seen
            or self._data
            or self._held
            or self._event_type
            or self._pending_lf != "none"
            or not chunk.endswith(b"\n\n")
            or b"\r" in chunk
        ):
            return False
        events = chunk[:-2].split(b"\n\n")
        for event in events:
            if not event.startswith(b"data:") or b"\n" in event or len(event) > MAX_EVENT_BYTES:
                return False
        for event in events:
            data = event[6:] if event.startswith(b"data: ") else event[5:]
            dropped = self._on_data(data, "") if data else False
            if out is not None and not dropped:
                out += self._client_copy(event) if self._null_usage or self._usage_member else event
                out += b"\n\n"
            self._null_usage = self._usage_member = False
        return True

    def _scan(self, chunk: bytes, out: bytearray | None) -> None:
        pos, end = 0, len(chunk)
        if self._pending_lf != "none" and end:
            route, self._pending_lf = self._pending_lf, "none"
            if chunk[0] == 0x0A:
                pos = 1
                if out is not None and route == "held":
                    self._held += b"\n"
                elif out is not None and route == "out":
                    out += b"\n"
        while pos < end:
            match = _LINE_END.search(chunk, pos)
            if match is None:
                self._partial(chunk[pos:], out)
                return
            stop = match.end()
            ended = self._line_done(chunk[pos : match.start()])
            if out is not None:
                if ended is None:
                    self._held += chunk[pos:stop]
                else:
                    if not ended:
                        out += self._client_copy(self._held)
                        out += chunk[pos:stop]
                    self._null_usage = self._usage_member = False
                    self._held.clear()
            if stop == end and chunk[stop - 1] == 0x0D:  # a lone CR: its LF may follow
                self._pending_lf = "held" if ended is None else "drop" if ended else "out"
            pos = stop

    def _partial(self, tail: bytes, out: bytearray | None) -> None:
        if out is not None:
            self._held += tail
        self._line_seen += len(tail)
        if self._oversized:
            return
        if self._line_seen + self._data_bytes > MAX_EVENT_BYTES:
            self._overflow()
        else:
            self._line += tail

    def _line_done(self, piece: bytes) -> bool | None:
        """A complete line: None within an event; at a blank line, whether to drop the event."""
        if not piece and not self._line_seen:
            return self._end_event()
        line = bytes(self._line) + piece if self._line else piece
        self._line.clear()
        self._line_seen = 0
        if not self._oversized:
            self._field(line)
        return None

    def _field(self, line: bytes) -> None:
        if line.startswith(b":"):
            return  # a comment (keep-alive pings)
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value)
            self._data_bytes += len(value)
            if self._data_bytes > MAX_EVENT_BYTES:
                self._overflow()
        elif name == b"event":
            self._event_type = value.decode("utf-8", "replace")

    def _overflow(self) -> None:
        self._log_once("an event outgrew %d bytes and is not read for usage", MAX_EVENT_BYTES)
        self._oversized = True
        self._line.clear()
        self._data.clear()
        self._data_bytes = 0

    def _end_event(self) -> bool:
        data, event_type, oversized = self._data, self._event_type, self._oversized
        self._data, self._data_bytes, self._event_type, self._oversized = [], 0, "", False
        if oversized or not data:
            return False
        return self._on_data(b"\n".join(data), event_type)

    def _on_data(self, data: bytes, event_type: str) -> bool:
        if data == b"[DONE]":
            self._done = True
            return False
        if self.operation != "responses" and self._text_later(data):
            return False
        try:
            payload = json.loads(data)
        except (ValueError, RecursionError):
            return False
        if not isinstance(payload, dict):
            return False
        if self.operation == "responses":
            self._on_responses_event(payload, event_type)
            return False
        return self._on_chunk(payload)

    def _text_later(self, data: bytes) -> bool:
        """Keep a chunk without usage unparsed (its text is read only if it has to be
        counted): parsing every chunk would cost ~10 µs each. False: parse it now."""
        if b'"usage"' in data:
            if not data.endswith(_NULL_TAILS) and _NULL_USAGE_AT_END.search(data) is None:
                return False  # usage, or an unusual layout: read it properly
            self._null_usage = self._stripping  # `"usage": null` asked for by us: removed
        if self._deferred_bytes + len(data) > MAX_DEFERRED_BYTES:
            return False  # enough kept unparsed: read this one now, keeping only its text
        self._text.append(data)
        self._deferred_bytes += len(data)
        return True

    def _on_chunk(self, payload: dict[str, object]) -> bool:
        """Read a Chat Completions / Completions chunk; True if it is usage only."""
        choices = payload.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict):
                    self._choice_text(choice)
        usage = payload.get("usage")
        # Asked for usage, the backend also adds `"usage": null` to every chunk; the client
        # that did not ask gets its chunks without it, as it would have.
        self._null_usage = self._stripping and usage is None and "usage" in payload
        if not isinstance(usage, dict):
            return False
        self._usage = chat_usage(usage) or self._usage
        if not choices:
            return True
        # Usage on a chunk with choices (some servers put it on the last content chunk):
        # the chunk goes on, without the usage the client did not ask for.
        self._usage_member = self._stripping
        return False

    def _choice_text(self, choice: dict[str, object]) -> None:
        self._add_text(choice.get("text"))
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return
        for key in ("content", "refusal", "reasoning_content"):
            self._add_text(delta.get(key))
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            if isinstance(call, dict):
                self._call_text(call.get("function"))
        self._call_text(delta.get("function_call"))

    def _call_text(self, function: object) -> None:
        if isinstance(function, dict):
            self._add_text(function.get("name"))
            self._add_text(function.get("arguments"))

    def _on_responses_event(self, payload: dict[str, object], event_type: str) -> None:
        kind = payload.get("type")
        kind = kind if isinstance(kind, str) else event_type
        if kind in _RESPONSES_DELTAS:
            self._add_text(payload.get("delta"))
        elif kind == "response.output_item.added":
            # A function call's name comes only here; its arguments follow as deltas.
            item = payload.get("item")
            if isinstance(item, dict) and item.get("type") == "function_call":
                self._add_text(item.get("name"))
        elif kind in _RESPONSES_TERMINAL:
            self._done = True
            response = payload.get("response")
            if isinstance(response, dict):
                self._usage = responses_usage(response.get("usage")) or self._usage

    def _add_text(self, value: object) -> None:
        if not isinstance(value, str) or not value:
            return
        room = MAX_COMPLETION_CHARS - self._text_chars
        if len(value) > room:
            self._log_once("the completion text outgrew %d characters", MAX_COMPLETION_CHARS)
            value = value[:room]
        if value:
            self._text.append(value)
            self._text_chars += len(value)

    def _log_once(self, message: str, limit: int) -> None:
        if message not in self._logged:
            self._logged.add(message)
            log.warning("%s stream: " + message, self.operation, limit)


# `, "usage": null`, then only scalar members up to the `}` that ends the data line: with no
# `}` or `]` between, that brace closes the top-level object, so the member is top-level.
_SCALAR = rb'(?:"(?:[^"\\]|\\.)*"|null|true|false|-?[0-9][0-9.eE+-]*)'
_NULL_USAGE_AT_END = re.compile(
    rb',\s*"usage"\s*:\s*null((?:\s*,\s*"(?:[^"\\]|\\.)*"\s*:\s*'
    + _SCALAR
    + rb")*\s*\})(?=[ \t]*(?:\r|\n|\Z))"
)


def _usage_near_end(data: bytes, operation: str) -> Usage | None:
    """A whole Chat Completions / Completions stream's usage, read from its last event that
    has one: the final usage event (~10 µs instead of reading every event). None when the
    stream is not plainly laid out there (the caller then reads it all)."""
    if operation not in _STRIPPABLE or b"\r" in data:
        return None
    at = data.rfind(b'"usage"')
    if at < 0:
        return None
    start = data.rfind(b"\n", 0, at) + 1
    end = data.find(b"\n", at)
    line = data[start : end if end >= 0 else len(data)]
    if not line.startswith(b"data:") or data[end : end + 2] != b"\n\n":
        return None  # not a one-line event: leave it to the full reader
    try:
        payload = json.loads(line[5:])
    except (ValueError, RecursionError):
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("usage"), dict):
        return None
    return chat_usage(payload["usage"])


# The usual layouts of that member, last in the object (compact and spaced JSON).
_NULL_TAILS: Final = (b',"usage":null}', b', "usage": null}')


def _without_null_usage(event: bytes | bytearray) -> bytes:
    """The event with its top-level `, "usage": null` member removed from its data line.
    Where OpenAI-compatible servers put it (last, or followed only by scalar members such as
    OpenAI's `"obfuscation"` padding) a suffix check or a regex finds it; anywhere else the
    object is walked (`_without_usage`)."""
    for tail in _NULL_TAILS:
        if event.endswith(tail):
            return bytes(event[: -len(tail)]) + b"}"
    stripped, found = _NULL_USAGE_AT_END.subn(rb"\1", bytes(event), count=1)
    return stripped if found else _without_usage(event)


# A JSON string, or a structural character: what the walk over a top-level object looks at.
_TOKEN: Final = re.compile(rb'"(?:[^"\\]|\\.)*"|[{}\[\],]')
_SPACE: Final = b" \t\r\n"


def _without_usage(event: bytes | bytearray) -> bytes:
    """The event with the top-level `usage` member of its JSON payload removed, whatever its
    value, and one comma with it; every other byte is kept. An event whose payload spans
    several data lines, or names `usage` twice or in escapes, is re-serialized instead."""
    event = bytes(event)
    lines = _data_lines(event)
    if len(lines) == 1:
        _, start, end, _ = lines[0]
        cut = _usage_member_span(event, start, end)
        if cut is not None:
            return event[: cut[0]] + event[cut[1] :]
    return _reserialized(event, lines)


def _data_lines(event: bytes) -> list[tuple[int, int, int, int]]:
    """The `data` lines of an event: where each starts, its value's start and end, and where
    the next line starts."""
    found: list[tuple[int, int, int, int]] = []
    pos = 0
    while pos < len(event):
        match = _LINE_END.search(event, pos)
        end, after = (match.start(), match.end()) if match else (len(event), len(event))
        name, colon, value = event[pos:end].partition(b":")
        if name == b"data":
            start = end - len(value) + (1 if value.startswith(b" ") else 0)
            found.append((pos, start if colon else end, end, after))
        pos = after
    return found


def _usage_member_span(text: bytes, start: int, end: int) -> tuple[int, int] | None:
    """The bytes to cut from the JSON object in `text[start:end]` to remove its one top-level
    `"usage"` member: from its key to the next key, or from the comma before it to its end
    when it is last. None when that member is not named exactly once at the top level."""
    members: list[list[int]] = []  # key start, value end, the `,` or `}` after it
    usage_at: list[int] = []
    depth, expect_key = 0, False
    for match in _TOKEN.finditer(text, start, end):
        token = match.group()
        if depth == 0 and (token != b"{" or text[start : match.start()].strip(_SPACE)):
            return None  # not an object at the top level
        if token[0] == 0x22:  # a string
            if depth == 1 and expect_key:
                if token == b'"usage"':
                    usage_at.append(len(members))
                members.append([match.start(), 0, 0])
                expect_key = False
            continue
        if depth == 1 and token in (b",", b"}") and members and not members[-1][2]:
            at = value_end = match.start()
            while text[value_end - 1] in _SPACE:
                value_end -= 1
            members[-1][1:] = value_end, at
        if token in (b"{", b"["):
            depth += 1
            expect_key = depth == 1
        elif token in (b"}", b"]"):
            depth -= 1
            if depth == 0:
                break
        elif depth == 1:
            expect_key = True
    if depth or len(usage_at) != 1 or not all(member[2] for member in members):
        return None
    i = usage_at[0]
    if i + 1 < len(members):
        return members[i][0], members[i + 1][0]
    if i:
        return members[i - 1][2], members[i][1]
    return members[i][0], members[i][1]


def _reserialized(event: bytes, lines: list[tuple[int, int, int, int]]) -> bytes:
    """The event with its payload written again without `usage`, compactly, in place of its
    first data line (its other data lines dropped). Left as it is if it cannot be read."""
    try:
        payload = json.loads(b"\n".join(event[start:end] for _, start, end, _ in lines))
    except (ValueError, RecursionError):
        return event
    if not isinstance(payload, dict) or "usage" not in payload:
        return event
    del payload["usage"]
    out = bytearray(event[: lines[0][1]])
    out += json.dumps(payload, separators=(",", ":")).encode()
    pos = lines[0][2]
    for line_start, _, _, after in lines[1:]:
        out += event[pos:line_start]
        pos = after
    out += event[pos:]
    return bytes(out)
