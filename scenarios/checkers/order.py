"""The order checker: per sharding key, first deliveries in the order values were acked.

Rules (anchors.md §2.3: OpenChaos OrderChecker):
- Per sharding key, the *first* delivery of each acked value must come in the order the
  values were acked (history order); a value first delivered after a value acked later
  than it is a violation. Lost values are left to the queue checker. OpenChaos's weaker
  check (acked order is a subsequence of the dequeue order) is reported too.
- Pure: entries in, frozen results out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from scenarios.history import DEQUEUE, ENQUEUE, Entry, Outcome, Response


@attrs.frozen(kw_only=True)
class OrderViolation:
    key: str
    #: First delivered after ``overtaken_by``, although acked before it.
    value: str
    overtaken_by: str


@attrs.frozen(kw_only=True)
class OrderResult:
    keys_checked: int
    violations: tuple[OrderViolation, ...]
    #: Keys whose acked order is not a subsequence of their dequeue order (OpenChaos).
    subsequence_failures: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_json(self, *, sample: int = 20) -> dict[str, Any]:
        return {
            "keysChecked": self.keys_checked,
            "isOrdered": self.ok,
            "violationCount": len(self.violations),
            "violations": [
                {"shardingKey": v.key, "value": v.value, "overtakenBy": v.overtaken_by}
                for v in self.violations[:sample]
            ],
            "wrongShardingKeys": list(self.subsequence_failures[:sample]),
        }


def _is_subsequence(needle: Sequence[str], haystack: Iterable[str]) -> bool:
    it = iter(haystack)
    return all(any(x == y for y in it) for x in needle)


def check_order(entries: Iterable[Entry]) -> OrderResult:
    """Per sharding key: first deliveries in acked order (see the module rules)."""
    acked: dict[str, list[str]] = {}
    dequeued: dict[str, list[str]] = {}
    for entry in entries:
        if not isinstance(entry, Response) or entry.outcome is not Outcome.SUCCESS:
            continue
        if entry.sharding_key is None or entry.value is None:
            continue
        if entry.op == ENQUEUE:
            acked.setdefault(entry.sharding_key, []).append(entry.value)
        elif entry.op == DEQUEUE:
            dequeued.setdefault(entry.sharding_key, []).append(entry.value)
    violations: list[OrderViolation] = []
    subsequence_failures: list[str] = []
    for key in sorted(acked):
        index = {v: i for i, v in reversed(list(enumerate(acked[key])))}
        seen: set[str] = set()
        best: tuple[int, str] | None = None  # the latest-acked value delivered so far
        for value in dequeued.get(key, []):
            if value in seen or value not in index:
                continue
            seen.add(value)
            if best is not None and index[value] < best[0]:
                violations.append(OrderViolation(key=key, value=value, overtaken_by=best[1]))
            elif best is None or index[value] > best[0]:
                best = (index[value], value)
        delivered_acked = [v for v in acked[key] if v in seen]
        if not _is_subsequence(delivered_acked, dequeued.get(key, [])):
            subsequence_failures.append(key)
    return OrderResult(
        keys_checked=len(acked),
        violations=tuple(violations),
        subsequence_failures=tuple(subsequence_failures),
    )
