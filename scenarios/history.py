"""Chaos histories in OpenChaos's text format: one tab-separated line per event.

Rules (anchors.md §2.3; openmessaging/openchaos ``recorder/*LogEntry.java``):
- A request: ``clientId op REQUEST value shardingKey timestamp extraInfo`` (7 fields).
- A response: ``clientId op RESPONSE SUCCESS|FAILURE|UNKNOWN value shardingKey timestamp
  sendLatency extraInfo endToEndLatency`` (10 fields). ``timestamp`` is when the answer
  came (ms since the epoch), so the call started at ``timestamp - sendLatency``.
- A fault: ``fault <type> start|end timestamp`` (4 fields), optionally followed by one
  ``extraInfo`` field (what was hit, e.g. ``target=broker-a``) — OpenChaos reads only the
  first four.
- A missing value is written ``null``, as Java prints it; so no field may *be* the text
  ``null``, contain a tab or a line break, or be empty. Values are checked when an entry is
  built, so ``format`` never writes a line ``parse`` cannot read back: the two round-trip.
- ``op`` is ``enqueue`` (a send) or ``dequeue`` (a consume) for the queue model; other
  names pass through untouched.
- Pure: strings in, values out. Reading and writing files is the caller's business.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from typing import Any

import attrs

ENQUEUE = "enqueue"
DEQUEUE = "dequeue"
FAULT = "fault"
NULL = "null"
#: Harness lines, RESPONSE lines of client ``HARNESS_CLIENT`` that the queue checkers skip:
#: ``master`` — the controller names a group's master (value: the master epoch; extra
#: ``group=,broker=ADDR,node=``), as the harness polled it; ``step`` — one step of a fault
#: sequence (value: what was done); ``probe`` — a check the harness made on a node (SUCCESS
#: passed, FAILURE found a violation; value: the probe's name, extra: what it saw).
MASTER = "master"
STEP = "step"
PROBE = "probe"
HARNESS_CLIENT = 999
#: Sends the harness makes itself, straight to one broker (``probe`` writes).
PROBE_CLIENT = 900


class HistoryError(ValueError):
    """A history line that is not in the format (the message names the line)."""


class Outcome(enum.Enum):
    """What a client learned about its call."""

    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    #: The call may or may not have taken effect (timeout, connection lost mid-call).
    UNKNOWN = "UNKNOWN"


class Phase(enum.Enum):
    START = "start"
    END = "end"


def _field(_inst: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is None:
        return
    # Three ``in`` tests, not a generator: every field of millions of lines passes here.
    if not value or value == NULL or "\t" in value or "\n" in value or "\r" in value:
        raise ValueError(
            f"{attribute.name} {value!r} cannot be written in a history line "
            "(empty, 'null', or holds a tab or line break)"
        )


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, not {value}")


def _op(_inst: object, attribute: attrs.Attribute[Any], value: str) -> None:
    _field(_inst, attribute, value)
    if value == FAULT:
        raise ValueError("op 'fault' would read back as a fault line")


@attrs.frozen(kw_only=True)
class Request:
    """A client started a call."""

    client_id: int = attrs.field(validator=_non_negative)
    op: str = attrs.field(validator=_op)
    value: str | None = attrs.field(default=None, validator=_field)
    sharding_key: str | None = attrs.field(default=None, validator=_field)
    timestamp_ms: int = attrs.field(validator=_non_negative)
    extra: str | None = attrs.field(default=None, validator=_field)


@attrs.frozen(kw_only=True)
class Response:
    """A client's call ended: its outcome, how long it took, what it carried."""

    client_id: int = attrs.field(validator=_non_negative)
    op: str = attrs.field(validator=_op)
    outcome: Outcome
    value: str | None = attrs.field(default=None, validator=_field)
    sharding_key: str | None = attrs.field(default=None, validator=_field)
    timestamp_ms: int = attrs.field(validator=_non_negative)
    #: Send latency: how long the call took (ms).
    latency_ms: int = attrs.field(default=0, validator=_non_negative)
    extra: str | None = attrs.field(default=None, validator=_field)
    #: For a dequeue: receive time minus the message's born time (ms); -1 when unknown.
    e2e_latency_ms: int = attrs.field(default=0)

    @property
    def started_ms(self) -> int:
        return self.timestamp_ms - self.latency_ms


@attrs.frozen(kw_only=True)
class FaultEvent:
    """A fault began or ended."""

    name: str = attrs.field(validator=_field)
    phase: Phase
    timestamp_ms: int = attrs.field(validator=_non_negative)
    extra: str | None = attrs.field(default=None, validator=_field)


Entry = Request | Response | FaultEvent


def _out(value: str | None) -> str:
    return NULL if value is None else value


def _in(text: str) -> str | None:
    return None if text == NULL else text


def format_entry(entry: Entry) -> str:
    """One history line, newline included."""
    if isinstance(entry, FaultEvent):
        fields = [FAULT, entry.name, entry.phase.value, str(entry.timestamp_ms)]
        if entry.extra is not None:
            fields.append(entry.extra)
    elif isinstance(entry, Request):
        fields = [
            str(entry.client_id),
            entry.op,
            "REQUEST",
            _out(entry.value),
            _out(entry.sharding_key),
            str(entry.timestamp_ms),
            _out(entry.extra),
        ]
    else:
        fields = [
            str(entry.client_id),
            entry.op,
            "RESPONSE",
            entry.outcome.value,
            _out(entry.value),
            _out(entry.sharding_key),
            str(entry.timestamp_ms),
            str(entry.latency_ms),
            _out(entry.extra),
            str(entry.e2e_latency_ms),
        ]
    return "\t".join(fields) + "\n"


def format_history(entries: Iterable[Entry]) -> str:
    return "".join(format_entry(e) for e in entries)


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not an integer") from None


def _parse_fields(fields: list[str]) -> Entry:
    if fields[0] == FAULT:
        if len(fields) not in (4, 5):
            raise ValueError(f"a fault line has 4 or 5 fields, not {len(fields)}")
        try:
            phase = Phase(fields[2])
        except ValueError:
            raise ValueError(f"fault phase {fields[2]!r} is not start or end") from None
        return FaultEvent(
            name=fields[1],
            phase=phase,
            timestamp_ms=_int(fields[3], "timestamp"),
            extra=fields[4] if len(fields) == 5 else None,
        )
    if len(fields) < 3:
        raise ValueError(f"too few fields ({len(fields)})")
    client_id = _int(fields[0], "clientId")
    if fields[2] == "REQUEST":
        if len(fields) != 7:
            raise ValueError(f"a REQUEST line has 7 fields, not {len(fields)}")
        return Request(
            client_id=client_id,
            op=fields[1],
            value=_in(fields[3]),
            sharding_key=_in(fields[4]),
            timestamp_ms=_int(fields[5], "timestamp"),
            extra=_in(fields[6]),
        )
    if fields[2] == "RESPONSE":
        if len(fields) != 10:
            raise ValueError(f"a RESPONSE line has 10 fields, not {len(fields)}")
        try:
            outcome = Outcome(fields[3])
        except ValueError:
            raise ValueError(f"outcome {fields[3]!r} is not SUCCESS, FAILURE or UNKNOWN") from None
        return Response(
            client_id=client_id,
            op=fields[1],
            outcome=outcome,
            value=_in(fields[4]),
            sharding_key=_in(fields[5]),
            timestamp_ms=_int(fields[6], "timestamp"),
            latency_ms=_int(fields[7], "sendLatency"),
            extra=_in(fields[8]),
            e2e_latency_ms=_int(fields[9], "endToEndLatency"),
        )
    raise ValueError(f"third field {fields[2]!r} is not REQUEST or RESPONSE")


def parse_line(line: str, lineno: int = 0) -> Entry:
    """One line (its trailing newline optional) as an entry; ``HistoryError`` if malformed."""
    text = line[:-1] if line.endswith("\n") else line
    try:
        return _parse_fields(text.split("\t"))
    except ValueError as exc:
        where = f"line {lineno}" if lineno else "history line"
        raise HistoryError(f"{where}: {exc}: {text[:200]!r}") from None


def iter_history(lines: Iterable[str]) -> Iterator[Entry]:
    """Entries of ``lines`` in order; blank lines are skipped."""
    for lineno, line in enumerate(lines, start=1):
        if line.strip():
            yield parse_line(line, lineno)


def reiterable(entries: Iterable[Entry]) -> Iterable[Entry]:
    """``entries`` as something a checker may iterate more than once: a one-shot iterator
    (a generator) is read into a list; a list or a ``HistoryFile`` (re-read from its file on
    every pass, so a long history is never held in memory) is returned as it is."""
    return list(entries) if isinstance(entries, Iterator) else entries


def parse_history(text: str) -> list[Entry]:
    """Entries of a whole history text (lines end at ``\n`` only, as in a file)."""
    return list(iter_history(text.split("\n")))


def extra_fields(extra: str | None) -> dict[str, str]:
    """``k=v,k=v`` extra info as a dict (items without ``=`` are ignored)."""
    if not extra:
        return {}
    out: dict[str, str] = {}
    for item in extra.split(","):
        key, sep, value = item.partition("=")
        if sep:
            out[key] = value
    return out


def make_extra(**items: object) -> str | None:
    """The ``k=v,k=v`` extra info for ``items`` (None values left out; None when empty).

    Values lose any character that would break the line or the ``k=v,`` split.
    """
    parts = []
    for key, value in items.items():
        if value is None:
            continue
        text = str(value)
        for bad in "\t\n\r,=":
            text = text.replace(bad, " ")
        parts.append(f"{key}={text.strip() or '-'}")
    return ",".join(parts) or None
