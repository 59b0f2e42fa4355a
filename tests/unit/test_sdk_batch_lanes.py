"""Natural batching's lanes (``client.batching.Batcher``) with a scripted exchange, no sockets.

Each test drives the batcher with a fake ``exchange`` whose answers the test releases, so
who leaves with whom is decided by the batcher alone. What is shown: an idle lane sends at
once and alone; what queues behind a request leaves as one batch when it lands, or at
once when a full batch waits (unordered lanes only); count and byte bounds; callers that
give up while queued are never sent; each caller gets its own result or its own copy of
the error; a batch refused for good is sent again one by one.
"""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing

from client.batching import BatchConfig, Batcher
from client.message import SendResult, SendStatus
from protocol.errors import MessageIllegal, RemotingTimeout, RocketError, ServiceNotAvailable
from protocol.route import MessageQueue

QUEUE = MessageQueue(topic="T", broker_name="b", queue_id=0)
ADDR = "127.0.0.1:1"


@attrs.define
class FakeBroker:
    """Records each request's items; answers when the test sets ``release`` (or at once)."""

    auto: bool = False
    requests: list[list[str]] = attrs.field(factory=list)
    release: trio.Event = attrs.field(factory=trio.Event)
    fail_with: RocketError | None = None
    #: Requests of more than one item are refused with this (then singles pass).
    refuse_batches: RocketError | None = None
    next_offset: int = 0

    async def exchange(
        self, addr: str, queue: MessageQueue, items: list[str], deadline: float
    ) -> list[SendResult]:
        self.requests.append(list(items))
        if not self.auto:
            with trio.move_on_at(deadline):
                await self.release.wait()
            if not self.release.is_set():
                raise RemotingTimeout("no answer")
        if self.refuse_batches is not None and len(items) > 1:
            raise self.refuse_batches
        if self.fail_with is not None:
            raise self.fail_with
        first, self.next_offset = self.next_offset, self.next_offset + len(items)
        return [
            SendResult(
                status=SendStatus.SEND_OK,
                msg_id=item,
                offset_msg_id=f"off-{item}",
                queue=queue,
                queue_offset=first + i,
            )
            for i, item in enumerate(items)
        ]


async def enter(
    nursery: trio.Nursery,
    batcher: Batcher[str],
    items: list[str],
    out: dict[str, SendResult | RocketError],
    *,
    ordered: bool = False,
    size: int = 10,
    timeout_s: float = 5.0,
) -> None:
    """Start a caller per item, each once the previous one is blocked (in this order)."""

    async def one(item: str) -> None:
        try:
            out[item] = await batcher.send(
                ADDR, QUEUE, item, size, trio.current_time() + timeout_s, ordered=ordered
            )
        except RocketError as exc:
            out[item] = exc

    for item in items:
        nursery.start_soon(one, item)
        await trio.testing.wait_all_tasks_blocked()


async def test_an_idle_lane_sends_at_once_then_what_queued_leaves_together() -> None:
    broker = FakeBroker()
    out: dict[str, SendResult | RocketError] = {}
    async with trio.open_nursery() as nursery:
        batcher = Batcher(nursery, broker.exchange, BatchConfig())
        await enter(nursery, batcher, ["a", "b", "c", "d"], out)
        await trio.testing.wait_all_tasks_blocked()
        assert broker.requests == [["a"]]  # alone, at once; b, c, d wait behind it
        assert batcher.waiting_messages() == 3
        broker.release.set()
    assert broker.requests == [["a"], ["b", "c", "d"]]
    assert {k: (r.msg_id, r.queue_offset) for k, r in out.items()} == {  # type: ignore[union-attr]
        "a": ("a", 0),
        "b": ("b", 1),
        "c": ("c", 2),
        "d": ("d", 3),
    }
    assert batcher.waiting_messages() == 0 and batcher.waiting_bytes == 0


async def test_count_and_byte_bounds_split_batches_and_full_ones_do_not_wait() -> None:
    """Unordered: a full batch leaves while a request is in flight."""
    broker = FakeBroker()
    out: dict[str, SendResult | RocketError] = {}
    async with trio.open_nursery() as nursery:
        batcher = Batcher(nursery, broker.exchange, BatchConfig(max_count=3, max_bytes=25))
        items = [f"m{i}" for i in range(8)]
        await enter(nursery, batcher, items, out)
        await trio.testing.wait_all_tasks_blocked()
        # m0 alone; then full batches (3 by count, but 25 bytes allow only 2 of 10 bytes).
        assert broker.requests == [["m0"], ["m1", "m2"], ["m3", "m4"], ["m5", "m6"]]
        broker.release.set()
    assert broker.requests[-1] == ["m7"]
    assert all(isinstance(r, SendResult) and r.msg_id == k for k, r in out.items())


@pytest.mark.parametrize("ordered", [False, True])
async def test_an_unordered_batch_goes_to_the_queue_the_producer_picks_for_it(
    ordered: bool,
) -> None:
    """``batch_queue`` names an unordered batch's queue; a message sent alone, and an
    ordered lane's batch, keep the queue their messages were sent to."""
    broker = FakeBroker()
    other = MessageQueue(topic="T", broker_name="b", queue_id=5)
    asked: list[MessageQueue] = []

    def batch_queue(first: MessageQueue) -> MessageQueue:
        asked.append(first)
        return other

    out: dict[str, SendResult | RocketError] = {}
    async with trio.open_nursery() as nursery:
        batcher = Batcher(nursery, broker.exchange, BatchConfig(), batch_queue=batch_queue)
        await enter(nursery, batcher, ["a", "b", "c"], out, ordered=ordered)
        await trio.testing.wait_all_tasks_blocked()
        broker.release.set()
    assert broker.requests == [["a"], ["b", "c"]]
    queues = {k: r.queue for k, r in out.items()}  # type: ignore[union-attr]
    if ordered:
        assert asked == [] and set(queues.values()) == {QUEUE}
    else:
        assert asked == [QUEUE]
        assert queues == {"a": QUEUE, "b": other, "c": other}


async def test_an_ordered_lane_has_one_request_in_flight() -> None:
    broker = FakeBroker()
    out: dict[str, SendResult | RocketError] = {}
    async with trio.open_nursery() as nursery:
        batcher = Batcher(nursery, broker.exchange, BatchConfig(max_count=2))
        items = ["o0", "o1", "o2", "o3", "o4"]
        await enter(nursery, batcher, items, out, ordered=True)
        await trio.testing.wait_all_tasks_blocked()
        assert broker.requests == [["o0"]]  # the full batch [o1, o2] waits its turn
        broker.auto = True
        broker.release.set()
    assert broker.requests == [["o0"], ["o1", "o2"], ["o3", "o4"]]
    offsets = [out[k].queue_offset for k in ["o0", "o1", "o2", "o3", "o4"]]  # type: ignore[union-attr]
    assert offsets == [0, 1, 2, 3, 4]


async def test_a_caller_that_gives_up_while_queued_is_never_sent() -> None:
    broker = FakeBroker()
    out: dict[str, SendResult | RocketError] = {}
    async with trio.open_nursery() as nursery:
        batcher = Batcher(nursery, broker.exchange, BatchConfig())
        await enter(nursery, batcher, ["a", "b"], out)
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as scope:
            scope.cancel()  # "x" enters the lane, then its caller is cancelled at once
            await batcher.send(ADDR, QUEUE, "x", 10, trio.current_time() + 5, ordered=False)
        assert batcher.waiting_messages() == 1  # b only
        broker.release.set()
    assert broker.requests == [["a"], ["b"]]
    assert set(out) == {"a", "b"}


async def test_a_caller_cancelled_after_its_message_left_costs_the_batch_nothing() -> None:
    """Callers park on their own tasks (no event each): one cancelled while its batch is
    in flight goes at once; the request goes on and the others hear their own results."""
    broker = FakeBroker()
    out: dict[str, SendResult | RocketError] = {}
    async with trio.open_nursery() as nursery:
        batcher = Batcher(nursery, broker.exchange, BatchConfig())
        await enter(nursery, batcher, ["a", "b"], out)
        cancelled = trio.CancelScope()

        async def quitter() -> None:
            with cancelled:
                await batcher.send(ADDR, QUEUE, "x", 10, trio.current_time() + 5, ordered=False)
            out["x-gone"] = RemotingTimeout("cancelled")  # only a marker: it left at once

        nursery.start_soon(quitter)
        await trio.testing.wait_all_tasks_blocked()
        broker.release.set()  # "a" lands: "b" and "x" leave together
        broker.release = trio.Event()
        await trio.testing.wait_all_tasks_blocked()
        assert broker.requests == [["a"], ["b", "x"]]
        cancelled.cancel()  # "x" has left: its caller goes, the request stays in flight
        await trio.testing.wait_all_tasks_blocked()
        assert "x-gone" in out and "b" not in out
        broker.release.set()
    assert isinstance(out["b"], SendResult) and out["b"].msg_id == "b"
    assert "x" not in out and batcher.waiting_messages() == 0


async def test_a_deadline_passing_in_the_queue_is_a_timeout_and_nothing_sent() -> None:
    broker = FakeBroker()
    out: dict[str, SendResult | RocketError] = {}
    async with trio.open_nursery() as nursery:
        batcher = Batcher(nursery, broker.exchange, BatchConfig())
        await enter(nursery, batcher, ["slow"], out)
        await trio.testing.wait_all_tasks_blocked()
        await enter(nursery, batcher, ["late"], out, timeout_s=0.2)
        await trio.sleep(0.4)
        assert isinstance(out["late"], RemotingTimeout)
        broker.release.set()
    assert broker.requests == [["slow"]]


async def test_each_caller_is_answered_at_its_own_deadline_in_any_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One task keeps every queued caller's deadline: a sooner deadline behind later ones
    is kept too (withdrawn, never sent), a caller already in a request hears
    RemotingTimeout at its deadline while the request goes on for the others. Virtual
    time: each caller is answered exactly at its deadline."""
    broker = FakeBroker()
    out: dict[str, SendResult | RocketError] = {}
    started = trio.current_time()
    ended: dict[str, float] = {}

    async def timed(item: str, timeout_s: float) -> None:
        try:
            out[item] = await batcher.send(
                ADDR, QUEUE, item, 10, trio.current_time() + timeout_s, ordered=True
            )
        except RocketError as exc:
            out[item] = exc
        ended[item] = trio.current_time() - started

    async with trio.open_nursery() as nursery:
        batcher = Batcher(nursery, broker.exchange, BatchConfig())
        # An ordered lane: "first" is in flight, the others queue behind it.
        for item, timeout_s in [("first", 0.5), ("x", 0.9), ("y", 5.0), ("z", 0.3)]:
            nursery.start_soon(timed, item, timeout_s)
            await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(0.4)
        assert isinstance(out["z"], RemotingTimeout) and ended["z"] == pytest.approx(0.3)
        assert batcher.waiting_messages() == 2  # x and y still queue
        await trio.sleep(0.3)  # "first" got no answer: x and y left together, and wait
        assert isinstance(out["first"], RemotingTimeout)
        assert broker.requests == [["first"], ["x", "y"]]
        await trio.sleep(0.3)
        assert isinstance(out["x"], RemotingTimeout) and ended["x"] == pytest.approx(0.9)
        assert "y" not in out
        broker.release.set()
    assert isinstance(out["y"], SendResult)
    assert broker.requests == [["first"], ["x", "y"]]  # z was never sent


async def test_each_caller_gets_its_own_copy_of_a_batch_error() -> None:
    broker = FakeBroker(fail_with=ServiceNotAvailable("slave, send to the master"))
    out: dict[str, SendResult | RocketError] = {}
    async with trio.open_nursery() as nursery:
        batcher = Batcher(nursery, broker.exchange, BatchConfig())
        await enter(nursery, batcher, ["a", "b", "c"], out)
        await trio.testing.wait_all_tasks_blocked()
        broker.release.set()
    assert broker.requests == [["a"], ["b", "c"]]
    errors = [out[k] for k in "abc"]
    assert all(type(e) is ServiceNotAvailable for e in errors)
    assert len({id(e) for e in errors}) == 3
    assert {str(e) for e in errors} == {str(ServiceNotAvailable("slave, send to the master"))}
    assert all(e.remark == "slave, send to the master" for e in errors)  # type: ignore[union-attr]


async def test_a_batch_refused_for_good_is_sent_again_one_by_one() -> None:
    """The broker may refuse a batch for being one (too big): each then goes alone."""
    broker = FakeBroker(refuse_batches=MessageIllegal("batch too large"))
    out: dict[str, SendResult | RocketError] = {}
    async with trio.open_nursery() as nursery:
        batcher = Batcher(nursery, broker.exchange, BatchConfig())
        await enter(nursery, batcher, ["a", "b", "c"], out)
        await trio.testing.wait_all_tasks_blocked()
        broker.auto = True
        broker.release.set()
    assert broker.requests[:2] == [["a"], ["b", "c"]]
    assert sorted(map(tuple, broker.requests[2:])) == [("b",), ("c",)]
    assert all(isinstance(out[k], SendResult) for k in "abc")


async def test_past_the_total_bound_unordered_sends_leave_alone_at_once() -> None:
    broker = FakeBroker()
    out: dict[str, SendResult | RocketError] = {}
    async with trio.open_nursery() as nursery:
        batcher = Batcher(nursery, broker.exchange, BatchConfig(total_max_bytes=15))
        await enter(nursery, batcher, ["a", "b", "c", "d"], out)
        await trio.testing.wait_all_tasks_blocked()
        # a alone (idle lane), b waits (10 bytes), c and d would pass 15: alone at once.
        assert broker.requests == [["a"], ["c"], ["d"]]
        broker.release.set()
    assert broker.requests[3:] == [["b"]]


def test_batch_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="max_count >= 2"):
        BatchConfig(max_count=1)
