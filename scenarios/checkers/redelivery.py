"""The redelivery checker: how far back each redelivery rewound its queue.

Rules:
- A message delivered again after its first delivery *rewinds* its queue by (the latest
  first delivery on that queue so far) - (its own first delivery): how far back, in
  consumption time, the group's position went. Offsets committed every few seconds and
  copied to the slaves keep it to a few seconds; a restart from 0 (offsets missing on a
  new master) rewinds to the start of the run.
- Pure: entries in, frozen results out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from scenarios.history import DEQUEUE, Entry, Outcome, Response, extra_fields


@attrs.frozen(kw_only=True)
class RedeliveryResult:
    redeliveries: int
    #: Largest rewind (ms) of any redelivery, 0 without any.
    max_rewind_ms: int
    #: (value, queue, rewind ms) of the deepest redeliveries, deepest first.
    deepest: tuple[tuple[str, str, int], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "redeliveries": self.redeliveries,
            "maxRewindMs": self.max_rewind_ms,
            "deepest": [{"value": v, "queue": q, "rewindMs": r} for v, q, r in self.deepest],
        }


def check_redelivery(entries: Iterable[Entry], *, sample: int = 10) -> RedeliveryResult:
    """How far back each redelivery rewound its queue (see the module rules)."""
    # (delivered, value, queue) per delivery, not the entries: millions at load.
    deliveries = sorted(
        (
            (e.timestamp_ms, e.value, extra_fields(e.extra).get("queue", ""))
            for e in entries
            if isinstance(e, Response)
            and e.op == DEQUEUE
            and e.outcome is Outcome.SUCCESS
            and e.value is not None
        ),
        key=lambda d: d[0],  # stable: deliveries of one millisecond keep history order
    )
    first: dict[str, int] = {}
    latest: dict[str, int] = {}
    rewinds: list[tuple[str, str, int]] = []
    for delivered_ms, value, queue in deliveries:
        if value not in first:
            first[value] = delivered_ms
            latest[queue] = delivered_ms
            continue
        rewind = max(0, latest.get(queue, delivered_ms) - first[value])
        rewinds.append((value, queue, rewind))
    deepest = sorted(rewinds, key=lambda r: -r[2])[:sample]
    return RedeliveryResult(
        redeliveries=len(rewinds),
        max_rewind_ms=max((r for _, _, r in rewinds), default=0),
        deepest=tuple(deepest),
    )
