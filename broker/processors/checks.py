"""Range checks of what a request names: queue ids against their topic, list sizes.

Rules (issue 13 item 1):
- The parsers (protocol/headers.py, protocol/bodies.py) check that a number fits its Java
  type; these checks apply each field's own limit at the handler, before anything is
  stored or looped over. A failed check raises ``InvalidParameter`` (INVALID_PARAMETER)
  with a remark naming the field, the value and the limit (and its config key).
- A queue id is legal for a topic when ``0 <= id < max(readQueueNums, writeQueueNums)``,
  or when the store still holds messages in that queue (``retained``: a topic updated to
  fewer queues keeps its old ones until consumers drained and committed them). For a
  topic this broker does not have, read-only offset queries still answer 0 as RocketMQ
  does (nothing is created), so there the id is only held to ``maxTopicQueueNums``.
- Pure: no I/O.
"""

from __future__ import annotations

from protocol.errors import InvalidParameter
from protocol.route import TopicConfig


def queue_count(config: TopicConfig) -> int:
    """How many queues ``config`` has (ids ``0..n-1``, readable or writable)."""
    return max(config.read_queue_nums, config.write_queue_nums)


def check_queue_id(
    topic: str,
    config: TopicConfig | None,
    queue_id: int,
    *,
    max_queue_nums: int,
    retained: bool = False,
) -> None:
    """Raise ``InvalidParameter`` unless ``queue_id`` is a queue of ``topic`` (see rules);
    ``retained``: the store holds messages in that queue."""
    if retained and 0 <= queue_id < max_queue_nums:
        return
    if config is None:
        if not 0 <= queue_id < max_queue_nums:
            raise InvalidParameter(
                f"queueId[{queue_id}] is illegal, topic:[{topic}]: a topic has at most "
                f"{max_queue_nums} queues (maxTopicQueueNums)"
            )
        return
    limit = queue_count(config)
    if not 0 <= queue_id < limit:
        raise InvalidParameter(
            f"queueId[{queue_id}] is illegal, topic:[{topic}] has {limit} queues "
            f"(readQueueNums {config.read_queue_nums}, writeQueueNums {config.write_queue_nums})"
        )


def check_count(what: str, count: int, limit: int, key: str) -> None:
    """Raise ``InvalidParameter`` when a request carries more than ``limit`` ``what``."""
    if count > limit:
        raise InvalidParameter(
            f"{count} {what} in one request exceed the maximum of {limit} ({key})"
        )
