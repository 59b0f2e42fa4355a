"""A send whose outcome is unknown is reported as unknown, whatever fails after it.

Found by the chaos harness (broker_restart_no_loss): a broker was SIGKILLed after storing a
message and before answering; the producer saw the connection drop (outcome unknown),
refreshed the route, found no broker (TOPIC_NOT_EXIST: definite) and raised that, so the
application was told "not stored" about a message that its consumers then received.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio

from client.message import Message
from client.producer import Producer
from client.routes import TopicInfo
from protocol.errors import (
    ConnectionLost,
    NetworkError,
    NoPermission,
    RemotingTimeout,
    RocketError,
    ServiceNotAvailable,
    TopicNotExist,
)
from protocol.route import MessageQueue, TopicRouteData

#: Short: a definite refusal is tried again until the send's deadline.
SEND_TIMEOUT_S = 0.5
QUEUES = (
    MessageQueue(topic="T", broker_name="broker-a", queue_id=0),
    MessageQueue(topic="T", broker_name="broker-b", queue_id=0),
)


class _Routes:
    """Route lookups answer from a script: a TopicInfo or an error each time."""

    def __init__(self, answers: list[TopicInfo | RocketError]) -> None:
        self.answers = answers

    async def get(self, topic: str) -> TopicInfo:
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, RocketError):
            raise answer
        return answer

    def cached(self, topic: str) -> TopicInfo | None:
        return None  # every attempt asks ``get``, which answers from the script

    def invalidate(self, topic: str) -> None:
        pass


def _info() -> TopicInfo:
    return TopicInfo(topic="T", route=TopicRouteData(), publish=QUEUES, subscribe=QUEUES)


def _producer(routes: _Routes, attempts: list[RocketError], retries: int = 2) -> Producer:
    producer = Producer(
        client=Any,  # type: ignore[arg-type]
        routes=routes,  # type: ignore[arg-type]
        group="g",
        client_id="c",
        timeout_s=SEND_TIMEOUT_S,
        retries=retries,
        rng=random.Random(1),
    )

    async def send_once(*_args: object) -> Any:
        # The last scripted failure repeats: refusals are tried again until the deadline.
        raise attempts.pop(0) if len(attempts) > 1 else attempts[0]

    producer._send_once = send_once  # type: ignore[method-assign]
    return producer


@pytest.mark.parametrize(
    "later",
    [
        TopicNotExist("No topic route info in name server"),
        NetworkError("cannot connect"),
        ServiceNotAvailable("broker shutting down"),
    ],
)
async def test_connection_lost_then_a_refusal_is_reported_as_unknown(later: RocketError) -> None:
    lost = ConnectionLost("peer closed the connection; outcome unknown")
    producer = _producer(_Routes([_info()]), [lost, later, later])
    with pytest.raises(ConnectionLost) as info:
        await producer.send(Message(topic="T", body=b"x"))
    assert info.value is lost


async def test_timeout_then_no_route_is_reported_as_unknown() -> None:
    timeout = RemotingTimeout("no answer in 3 s")
    routes = _Routes([_info(), TopicNotExist("no route")])
    producer = _producer(routes, [timeout])
    with pytest.raises(RemotingTimeout) as info:
        await producer.send(Message(topic="T", body=b"x"))
    assert info.value is timeout


async def test_definite_refusals_alone_stay_definite() -> None:
    refusal = ServiceNotAvailable("broker shutting down")
    producer = _producer(_Routes([_info()]), [refusal, refusal, refusal])
    with pytest.raises(ServiceNotAvailable):
        await producer.send(Message(topic="T", body=b"x"))


async def test_ordered_send_after_an_unknown_attempt_is_unknown_too() -> None:
    lost = ConnectionLost("outcome unknown")
    producer = _producer(_Routes([_info()]), [lost])
    with pytest.raises(ConnectionLost):
        await producer.send(Message(topic="T", body=b"x"), sharding_key="k")


class _CountingRoutes(_Routes):
    def __init__(self, answers: list[TopicInfo | RocketError]) -> None:
        super().__init__(answers)
        self.invalidated = 0

    def invalidate(self, topic: str) -> None:
        self.invalidated += 1


async def test_a_route_without_a_master_is_read_again() -> None:
    """Found by master_kill_allack_no_loss: the route cached between the old master's
    removal and the new one's registration has no master; it must not stay cached."""
    no_master = TopicInfo(topic="T", route=TopicRouteData(), publish=(), subscribe=QUEUES)
    routes = _CountingRoutes([no_master, _info()])
    producer = _producer(routes, [])
    sent: list[object] = []

    async def send_once(*args: object) -> Any:
        sent.append(args[1])
        return "ok"

    producer._send_once = send_once  # type: ignore[method-assign]
    assert await producer.send(Message(topic="T", body=b"x")) == "ok"
    assert routes.invalidated == 1 and len(sent) == 1


async def test_no_master_at_all_is_a_retriable_topic_not_exist() -> None:
    no_master = TopicInfo(topic="T", route=TopicRouteData(), publish=(), subscribe=QUEUES)
    routes = _CountingRoutes([no_master])
    producer = _producer(routes, [])
    with pytest.raises(TopicNotExist) as info:
        await producer.send(Message(topic="T", body=b"x"))
    assert info.value.retriable and "no writable queue" in str(info.value)
    assert routes.invalidated >= 3  # every attempt re-reads the route


async def test_refusals_wait_within_the_deadline_for_the_new_master() -> None:
    """A failover: the dead master refuses connections, then the route has no master, then
    the new master takes the send. Nothing was stored before, so the caller sees SEND_OK."""
    no_master = TopicInfo(topic="T", route=TopicRouteData(), publish=(), subscribe=QUEUES)
    routes = _Routes([_info(), no_master, no_master, _info()])
    outcomes: list[RocketError | str] = [NetworkError("connection refused"), "ok"]
    producer = _producer(routes, [])

    async def send_once(*_args: object) -> Any:
        outcome = outcomes.pop(0)
        if isinstance(outcome, RocketError):
            raise outcome
        return outcome

    producer._send_once = send_once  # type: ignore[method-assign]
    assert await producer.send(Message(topic="T", body=b"x"), sharding_key="k") == "ok"
    assert not outcomes


async def test_a_topic_never_routed_fails_at_once() -> None:
    routes = _CountingRoutes([TopicNotExist("No topic route info in name server")])
    producer = _producer(routes, [])
    with pytest.raises(TopicNotExist):
        await producer.send(Message(topic="T", body=b"x"))
    assert routes.invalidated == 1


class _RoutesThatHang(_Routes):
    """The first lookup answers; every later one hangs (a NameServer gone slow)."""

    async def get(self, topic: str) -> TopicInfo:
        if self.answers:
            answer = self.answers.pop(0)
            assert isinstance(answer, TopicInfo)
            return answer
        await trio.sleep_forever()


async def test_a_deadline_spent_reading_the_route_again_keeps_the_refusal() -> None:
    """A refusal that stored nothing, then the deadline runs out while the route is read
    again: the caller hears the refusal (not stored), not a bare timeout (which would
    read as an unknown outcome)."""
    refusal = NoPermission("the broker[b] sending message is forbidden")
    producer = _producer(_RoutesThatHang([_info()]), [refusal])
    with pytest.raises(NoPermission):
        await producer.send(Message(topic="T", body=b"x"))
