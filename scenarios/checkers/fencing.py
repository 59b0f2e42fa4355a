"""The fencing checker: acks from deposed masters, elections and failovers per group.

Rules (controller mode; needs the harness's ``master`` lines and ``store=`` in acks):
- An ack is from a *deposed master* when the call started after the controller was seen
  naming another broker master at a higher epoch than one at which the acker was master,
  and the acker was not seen master again up to ``REELECTED_SLACK_MS`` after the ack (a
  seen-late re-election). Observations are stamped when the answer came, later than the
  election itself, so a flagged ack is certain. An observation of "no master" deposes
  nobody (no other broker can ack then).
- Elections (master epoch changes) and failovers (master address changes) are counted per
  group.
- Pure: entries in, frozen results out.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from scenarios.checkers.queue import SEND_OK
from scenarios.history import (
    ENQUEUE,
    MASTER,
    Entry,
    Outcome,
    Response,
    extra_fields,
    reiterable,
)

#: An acker seen elected again this soon after its ack was (probably) master already.
REELECTED_SLACK_MS = 10_000


@attrs.frozen(kw_only=True)
class MasterSeen:
    """The controller named ``address`` master of ``group`` at ``epoch`` (seen ``at_ms``)."""

    at_ms: int
    group: str
    epoch: int
    #: None: the controller named no master.
    address: str | None


@attrs.frozen(kw_only=True)
class DeposedAck:
    value: str
    #: The broker that acked (stored) the message.
    store: str
    status: str
    started_ms: int
    acked_ms: int
    #: Whom the controller had named master when the call started, and at which epoch.
    master_then: str
    epoch_then: int


@attrs.frozen(kw_only=True)
class FencingResult:
    masters: tuple[MasterSeen, ...]
    #: Acks that could be judged (a master had been seen in their group before them).
    acks_judged: int
    #: SEND_OK acks of a deposed master.
    deposed: tuple[DeposedAck, ...]
    #: Acks of a deposed master with a degraded status.
    deposed_degraded: tuple[DeposedAck, ...]

    def elections(self) -> dict[str, int]:
        """Per group: master epoch changes after the first observation."""
        out: dict[str, int] = {}
        for group, seen in _by_group(self.masters).items():
            out[group] = len({m.epoch for m in seen}) - 1
        return out

    def failovers(self) -> dict[str, int]:
        """Per group: changes of the named master's address (no-master gaps skipped)."""
        out: dict[str, int] = {}
        for group, seen in _by_group(self.masters).items():
            named = [m.address for m in seen if m.address is not None]
            out[group] = sum(a != b for a, b in itertools.pairwise(named))
        return out

    def to_json(self, *, sample: int = 20) -> dict[str, Any]:
        def ack(d: DeposedAck) -> dict[str, Any]:
            return {
                "value": d.value,
                "store": d.store,
                "status": d.status,
                "startTimestamp": d.started_ms,
                "ackTimestamp": d.acked_ms,
                "masterThen": d.master_then,
                "epochThen": d.epoch_then,
            }

        return {
            "mastersSeen": [
                {"timestamp": m.at_ms, "group": m.group, "epoch": m.epoch, "address": m.address}
                for m in self.masters
            ],
            "elections": self.elections(),
            "failovers": self.failovers(),
            "acksJudged": self.acks_judged,
            "deposedAckCount": len(self.deposed),
            "deposedAcks": [ack(d) for d in self.deposed[:sample]],
            "deposedDegradedAckCount": len(self.deposed_degraded),
            "deposedDegradedAcks": [ack(d) for d in self.deposed_degraded[:sample]],
        }


def _by_group(masters: Iterable[MasterSeen]) -> dict[str, list[MasterSeen]]:
    out: dict[str, list[MasterSeen]] = {}
    for m in sorted(masters, key=lambda m: m.at_ms):
        out.setdefault(m.group, []).append(m)
    return out


def masters_seen(entries: Iterable[Entry]) -> tuple[MasterSeen, ...]:
    """The harness's ``master`` lines, in time order."""
    out = []
    for entry in entries:
        if isinstance(entry, Response) and entry.op == MASTER and entry.value is not None:
            extra = extra_fields(entry.extra)
            broker = extra.get("broker", "none")
            out.append(
                MasterSeen(
                    at_ms=entry.timestamp_ms,
                    group=extra.get("group", ""),
                    epoch=int(entry.value),
                    address=None if broker == "none" else broker,
                )
            )
    return tuple(sorted(out, key=lambda m: m.at_ms))


def _deposed_by(
    seen: Sequence[MasterSeen], store: str, started_ms: int, acked_ms: int
) -> MasterSeen | None:
    """The observation that proves ``store`` deposed when a call started (see the rules)."""
    before = [m for m in seen if m.at_ms <= started_ms and m.address is not None]
    if not before or before[-1].address == store:
        return None
    then = before[-1]
    if not any(m.address == store and m.epoch < then.epoch for m in before):
        return None  # never a master before: a new master seen late, not a deposed one
    if any(
        m.address == store and m.epoch > then.epoch and m.at_ms <= acked_ms + REELECTED_SLACK_MS
        for m in seen
    ):
        return None  # elected again, seen late
    return then


def check_fencing(entries: Iterable[Entry]) -> FencingResult:
    """Acks of deposed masters (see the module rules); reads ``entries`` twice."""
    entries = reiterable(entries)
    masters = masters_seen(entries)
    groups = _by_group(masters)
    judged = 0
    deposed: list[DeposedAck] = []
    degraded: list[DeposedAck] = []
    for entry in entries:
        if not (
            isinstance(entry, Response)
            and entry.op == ENQUEUE
            and entry.outcome is Outcome.SUCCESS
            and entry.value is not None
        ):
            continue
        extra = extra_fields(entry.extra)
        store = extra.get("store")
        seen = groups.get(extra.get("queue", "").rpartition(":")[0])
        if store is None or not seen or seen[0].at_ms > entry.started_ms:
            continue
        judged += 1
        then = _deposed_by(seen, store, entry.started_ms, entry.timestamp_ms)
        if then is None:
            continue
        assert then.address is not None
        status = extra.get("status", SEND_OK)
        found = DeposedAck(
            value=entry.value,
            store=store,
            status=status,
            started_ms=entry.started_ms,
            acked_ms=entry.timestamp_ms,
            master_then=then.address,
            epoch_then=then.epoch,
        )
        (deposed if status == SEND_OK else degraded).append(found)
    return FencingResult(
        masters=masters,
        acks_judged=judged,
        deposed=tuple(deposed),
        deposed_degraded=tuple(degraded),
    )
