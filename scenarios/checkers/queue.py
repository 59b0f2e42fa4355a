"""The queue checker: what was lost, duplicated, unexpected or recovered.

Rules (anchors.md §2.3-2.4: OpenChaos QueueChecker, Jepsen's ``total-queue``):
- A message is its ``value``. A send is *acked* when its enqueue RESPONSE is SUCCESS; the
  SDK's SendStatus travels in the extra info as ``status=...`` and only ``SEND_OK`` carries
  the full durability promise. Acked with another status (``FLUSH_SLAVE_TIMEOUT``...) is
  *degraded*: stored, not as durable as configured; its loss is counted apart.
- Queue buckets (each value in exactly one of lost / delivered / not-delivered by outcome):
  ``lost`` = acked SEND_OK, never dequeued; ``lost_degraded`` = acked degraded, never
  dequeued; ``recovered`` = outcome UNKNOWN (or no response at all), dequeued;
  ``failed_delivered`` = outcome FAILURE, yet dequeued (the client was told a lie);
  ``unexpected`` = dequeued, never sent; ``duplicated`` = dequeued more than once.
  A value sent more than once takes its best outcome (SUCCESS > UNKNOWN > FAILURE).
- Pure: entries in, frozen results out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import attrs

from scenarios.history import (
    DEQUEUE,
    ENQUEUE,
    Entry,
    FaultEvent,
    Outcome,
    Request,
    Response,
    extra_fields,
)

SEND_OK = "SEND_OK"

_RANK = {Outcome.FAILURE: 0, Outcome.UNKNOWN: 1, Outcome.SUCCESS: 2}


@attrs.frozen(kw_only=True)
class QueueResult:
    enqueue_invoked: int
    acked: int
    acked_degraded: int
    failed: int
    unknown: int
    dequeued: int
    distinct_dequeued: int
    lost: tuple[str, ...]
    lost_degraded: tuple[str, ...]
    recovered: tuple[str, ...]
    failed_delivered: tuple[str, ...]
    unexpected: tuple[str, ...]
    #: (value, times dequeued) for values dequeued more than once.
    duplicated: tuple[tuple[str, int], ...]

    @property
    def duplicate_deliveries(self) -> int:
        """Deliveries beyond the first, over all values."""
        return sum(n - 1 for _, n in self.duplicated)

    def to_json(self, *, sample: int = 20) -> dict[str, Any]:
        return {
            "enqueueInvokeCount": self.enqueue_invoked,
            "enqueueSuccessCount": self.acked,
            "enqueueSuccessDegradedCount": self.acked_degraded,
            "enqueueFailureCount": self.failed,
            "enqueueUnknownCount": self.unknown,
            "dequeueSuccessCount": self.dequeued,
            "dequeueDistinctCount": self.distinct_dequeued,
            "lostMessageCount": len(self.lost),
            "lostMessages": list(self.lost[:sample]),
            "lostDegradedCount": len(self.lost_degraded),
            "lostDegradedMessages": list(self.lost_degraded[:sample]),
            "recoveredCount": len(self.recovered),
            "failedButDeliveredCount": len(self.failed_delivered),
            "failedButDeliveredMessages": list(self.failed_delivered[:sample]),
            "unexpectedCount": len(self.unexpected),
            "unexpectedMessages": list(self.unexpected[:sample]),
            "duplicateMessageCount": len(self.duplicated),
            "duplicateDeliveries": self.duplicate_deliveries,
            "duplicateMessages": dict(self.duplicated[:sample]),
            "atLeastOnce": not self.lost,
            "atMostOnce": not self.duplicated,
            "exactlyOnce": not self.lost and not self.duplicated,
        }


def _value_key(value: str) -> tuple[int, int | str]:
    """Numbers in numeric order, then any other text."""
    return (0, int(value)) if value.isdigit() else (1, value)


def _sorted(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(values, key=_value_key))


def check_queue(entries: Iterable[Entry]) -> QueueResult:
    """Lost, duplicated, unexpected and recovered messages of a queue history."""
    attempted: set[str] = set()
    invoked = 0
    outcome: dict[str, Outcome] = {}
    status: dict[str, str] = {}
    delivered: Counter[str] = Counter()
    for entry in entries:
        if isinstance(entry, FaultEvent) or entry.value is None:
            continue
        if entry.op == ENQUEUE and isinstance(entry, Request):
            invoked += 1
            attempted.add(entry.value)
        elif entry.op == ENQUEUE and isinstance(entry, Response):
            attempted.add(entry.value)
            old = outcome.get(entry.value)
            if old is None or _RANK[entry.outcome] >= _RANK[old]:
                outcome[entry.value] = entry.outcome
                if entry.outcome is Outcome.SUCCESS:
                    said = extra_fields(entry.extra).get("status", SEND_OK)
                    if said != SEND_OK:  # only the few degraded acks are kept
                        status[entry.value] = said
                    else:
                        status.pop(entry.value, None)
        elif (
            entry.op == DEQUEUE and isinstance(entry, Response) and entry.outcome is Outcome.SUCCESS
        ):
            delivered[entry.value] += 1
    acked = {v for v, o in outcome.items() if o is Outcome.SUCCESS}
    degraded = {v for v in acked if v in status}
    failed = {v for v, o in outcome.items() if o is Outcome.FAILURE}
    unknown = attempted - acked - failed
    return QueueResult(
        enqueue_invoked=invoked,
        acked=len(acked),
        acked_degraded=len(degraded),
        failed=len(failed),
        unknown=len(unknown),
        dequeued=sum(delivered.values()),
        distinct_dequeued=len(delivered),
        lost=_sorted(v for v in acked - degraded if v not in delivered),
        lost_degraded=_sorted(v for v in degraded if v not in delivered),
        recovered=_sorted(v for v in unknown if v in delivered),
        failed_delivered=_sorted(v for v in failed if v in delivered),
        unexpected=_sorted(v for v in delivered if v not in attempted),
        duplicated=tuple(
            (v, delivered[v]) for v in _sorted(v for v, n in delivered.items() if n > 1)
        ),
    )
