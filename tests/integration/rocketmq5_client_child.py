"""Drives the official RocketMQ 5 Python client (``rocketmq-python-client``) against a proxy.

Run as ``python rocketmq5_client_child.py SCENARIO PROXY_ADDR TOPIC GROUP``; prints one JSON
line per event (``{"event": ..., ...}``) and exits 0 when the scenario ran to its end. The
test reads the events and decides; this script only drives the client, in its own process
(the client starts threads and an asyncio loop of its own). Every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

from rocketmq import (
    ClientConfiguration,
    ConsumeResult,
    Credentials,
    FilterExpression,
    Message,
    Producer,
    PushConsumer,
    SimpleConsumer,
    TransactionChecker,
    TransactionResolution,
)
from rocketmq.grpc_protocol import FilterType
from rocketmq.v5.consumer.push import MessageListener

DEADLINE_S = 30.0
#: ``G5_TLS=1``: every client connects with TLS, trusting the CA file named by
#: ``$GRPC_DEFAULT_SSL_ROOTS_FILE_PATH`` (the client passes no roots of its own to grpc).
TLS = os.environ.get("G5_TLS") == "1"


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def send(
    config: ClientConfiguration, topic: str, bodies: list[str], message_group: str | None = None
) -> None:
    producer = Producer(config, (topic,), tls_enable=TLS)
    producer.startup()
    try:
        for i, body in enumerate(bodies):
            message = Message()
            message.topic = topic
            message.body = body.encode()
            message.tag = "TagA" if i % 2 == 0 else "TagB"
            message.keys = f"key-{body}"
            message.add_property("n", str(i))
            if message_group is not None:
                message.message_group = message_group
            receipt = producer.send(message)
            emit("sent", body=body, message_id=receipt.message_id)
    finally:
        producer.shutdown()


def started_consumer(config: ClientConfiguration, topic: str, group: str) -> SimpleConsumer:
    """A started SimpleConsumer of every tag of ``topic``, long-polling 2 s."""
    consumer = SimpleConsumer(
        config, group, {topic: FilterExpression("*")}, await_duration=2, tls_enable=TLS
    )
    consumer.startup()
    return consumer


def receive_until(
    consumer: SimpleConsumer, count: int, invisible_s: int, *, batch: int = 16
) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < count and time.monotonic() < deadline:
        got += consumer.receive(batch, invisible_s)
    return got


def describe(message: Any) -> dict[str, Any]:
    return {
        "body": message.body.decode(),
        "message_id": message.message_id,
        "tag": message.tag,
        "keys": sorted(message.keys),
        "properties": dict(message.properties),
        "attempt": message.delivery_attempt,
        "topic": message.topic,
    }


def simple(config: ClientConfiguration, topic: str, group: str) -> None:
    """Send four; receive them; ack two, extend one, nack one; the nacked comes again."""
    bodies = ["a", "b", "c", "d"]
    send(config, topic, bodies)
    consumer = SimpleConsumer(
        config, group, {topic: FilterExpression("*")}, await_duration=5, tls_enable=TLS
    )
    consumer.startup()
    try:
        got = receive_until(consumer, 4, invisible_s=20)
        for message in got:
            emit("received", **describe(message))
        by_body = {m.body.decode(): m for m in got}
        consumer.ack(by_body["a"])
        consumer.ack(by_body["b"])
        consumer.change_invisible_duration(by_body["c"], 25)
        consumer.change_invisible_duration(by_body["d"], 1)
        emit("settled")
        again = receive_until(consumer, 1, invisible_s=20)
        for message in again:
            emit("again", **describe(message))
            consumer.ack(message)
        consumer.ack(by_body["c"])  # the extended handle
        emit("acked_extended")
        # Everything acked: nothing more comes.
        emit("quiet", count=len(consumer.receive(16, 20)))
    finally:
        consumer.shutdown()


def filtered(config: ClientConfiguration, topic: str, group: str) -> None:
    """A tag filter: only TagA messages (even indexes) are received."""
    send(config, topic, ["f0", "f1", "f2", "f3"])
    consumer = SimpleConsumer(
        config, group, {topic: FilterExpression("TagA")}, await_duration=3, tls_enable=TLS
    )
    consumer.startup()
    try:
        got = receive_until(consumer, 2, invisible_s=20)
        for message in got:
            emit("received", **describe(message))
            consumer.ack(message)
        emit("quiet", count=len(consumer.receive(16, 20)))
    finally:
        consumer.shutdown()


def fifo(config: ClientConfiguration, topic: str, group: str) -> None:
    """An orderly group: a message group's next message waits until the one before is
    acked; one not acked comes again (attempt 2) before the next."""
    send(config, topic, ["q0", "q1", "q2"], message_group="order-1")
    consumer = started_consumer(config, topic, group)
    try:
        steps: list[list[Any]] = []
        first = receive_until(consumer, 1, invisible_s=20, batch=1)
        steps.append(first)
        steps.append(consumer.receive(1, 20))  # held: q0 is out
        consumer.ack(first[0])
        second = receive_until(consumer, 1, invisible_s=2, batch=1)  # q1, not acked
        steps.append(second)
        again = receive_until(consumer, 1, invisible_s=20, batch=1)  # q1 again after 2 s
        steps.append(again)
        consumer.ack(again[0])
        steps.append(receive_until(consumer, 1, invisible_s=20, batch=1))
        for i, step in enumerate(steps):
            emit("step", index=i, got=[describe(m) for m in step])
            if i == 4:
                for m in step:
                    consumer.ack(m)
    finally:
        consumer.shutdown()


def before_kill(config: ClientConfiguration, topic: str, group: str) -> None:
    """Send 20; receive them all (invisible 8 s); ack the even ones."""
    send(config, topic, [f"s{i}" for i in range(20)])
    consumer = started_consumer(config, topic, group)
    try:
        for message in receive_until(consumer, 20, invisible_s=8):
            body = message.body.decode()
            if int(body[1:]) % 2 == 0:
                consumer.ack(message)
                emit("acked", body=body)
            else:
                emit("left", body=body)
    finally:
        consumer.shutdown()


def after_kill(config: ClientConfiguration, topic: str, group: str) -> None:
    """Receive (and ack) until every odd message came back, or the deadline."""
    consumer = started_consumer(config, topic, group)
    try:
        wanted = {f"s{i}" for i in range(1, 20, 2)}
        deadline = time.monotonic() + 60
        while wanted and time.monotonic() < deadline:
            try:
                messages = consumer.receive(16, 20)
            except Exception as exc:  # the failover: brokers refuse or vanish for a while
                emit("error", text=str(exc)[:200])
                time.sleep(0.5)
                continue
            for message in messages:
                body = message.body.decode()
                wanted.discard(body)
                emit("received", body=body, attempt=message.delivery_attempt)
                consumer.ack(message)
    finally:
        consumer.shutdown()


def send_for(config: ClientConfiguration, topic: str, group: str) -> None:
    """Send ``w0``, ``w1``, ... for 12 s (the test kills the master meanwhile); each send
    is either acked or an error."""
    producer = Producer(config, (topic,), tls_enable=TLS)
    producer.startup()
    emit("sending")
    try:
        deadline = time.monotonic() + 12
        n = 0
        while time.monotonic() < deadline:
            message = Message()
            message.topic = topic
            message.body = f"w{n}".encode()
            try:
                producer.send(message)
                emit("acked", body=f"w{n}")
            except Exception as exc:  # the failover: no master for a while
                emit("error", body=f"w{n}", text=str(exc)[:200])
            n += 1
            time.sleep(0.05)
    finally:
        producer.shutdown()


def receive_all(config: ClientConfiguration, topic: str, group: str) -> None:
    """Receive (and ack) until nothing came for 8 s, or 60 s passed."""
    consumer = started_consumer(config, topic, group)
    try:
        deadline = time.monotonic() + 60
        quiet_until = time.monotonic() + 8
        while time.monotonic() < min(deadline, quiet_until):
            try:
                messages = consumer.receive(32, 20)
            except Exception as exc:
                emit("error", text=str(exc)[:200])
                time.sleep(0.5)
                continue
            for message in messages:
                emit("received", body=message.body.decode())
                consumer.ack(message)
                quiet_until = time.monotonic() + 8
    finally:
        consumer.shutdown()


class Failing(MessageListener):  # type: ignore[misc]
    """Fails each message's first delivery, then succeeds."""

    def __init__(self, want: int) -> None:
        self.seen: dict[str, int] = {}
        self.done = threading.Event()
        self.want = want
        self.lock = threading.Lock()

    def consume(self, message: Any) -> Any:
        body = message.body.decode()
        with self.lock:
            self.seen[body] = self.seen.get(body, 0) + 1
            emit("consumed", body=body, attempt=message.delivery_attempt)
            if self.seen[body] == 1:
                return ConsumeResult.FAILURE
            if len([b for b, n in self.seen.items() if n >= 2]) >= self.want:
                self.done.set()
            return ConsumeResult.SUCCESS


def sql(config: ClientConfiguration, topic: str, group: str) -> None:
    """A SQL92 filter on the user property ``n`` (0..3): only n > 1 is received."""
    send(config, topic, ["q0", "q1", "q2", "q3"])
    expression = FilterExpression("n > 1", FilterType.SQL)
    consumer = SimpleConsumer(config, group, {topic: expression}, await_duration=3, tls_enable=TLS)
    consumer.startup()
    try:
        for message in receive_until(consumer, 2, invisible_s=20):
            emit("received", **describe(message))
            consumer.ack(message)
        emit("quiet", count=len(consumer.receive(16, 20)))
    finally:
        consumer.shutdown()


def delay(config: ClientConfiguration, topic: str, group: str) -> None:
    """A message with a delivery time 3 s ahead is not received before it."""
    producer = Producer(config, (topic,), tls_enable=TLS)
    producer.startup()
    try:
        message = Message()
        message.topic = topic
        message.body = b"later"
        sent_at = time.time()
        # The client sends this value as the Timestamp's seconds.
        message.delivery_timestamp = int(sent_at) + 3
        producer.send(message)
    finally:
        producer.shutdown()
    consumer = started_consumer(config, topic, group)
    try:
        for message in receive_until(consumer, 1, invisible_s=20):
            emit("received", body=message.body.decode(), after_s=time.time() - sent_at)
            consumer.ack(message)
    finally:
        consumer.shutdown()


class AlwaysFailing(MessageListener):  # type: ignore[misc]
    def consume(self, message: Any) -> Any:
        emit("consumed", body=message.body.decode(), attempt=message.delivery_attempt)
        return ConsumeResult.FAILURE


def push_dlq(config: ClientConfiguration, topic: str, group: str) -> None:
    """A listener that always fails, for 8 s: the message runs out of attempts."""
    send(config, topic, ["dead"], message_group="dlq-group")
    consumer = PushConsumer(
        config, group, AlwaysFailing(), {topic: FilterExpression("*")}, tls_enable=TLS
    )
    consumer.startup()
    try:
        time.sleep(8)
    finally:
        consumer.shutdown()


def push(config: ClientConfiguration, topic: str, group: str) -> None:
    bodies = ["p0", "p1", "p2"]
    send(config, topic, bodies)
    listener = Failing(len(bodies))
    consumer = PushConsumer(config, group, listener, {topic: FilterExpression("*")}, tls_enable=TLS)
    consumer.startup()
    try:
        emit("done", ok=listener.done.wait(DEADLINE_S))
    finally:
        consumer.shutdown()


class CommitWhenChecked(TransactionChecker):  # type: ignore[misc]
    """The broker's check (a RecoverOrphanedTransactionCommand): says so, and decides as
    the producer did (a slow machine may check a half before its commit or rollback)."""

    def __init__(self) -> None:
        self.checked = threading.Event()

    def check(self, message: Any) -> Any:
        body = message.body.decode()
        emit("checked", body=body, message_id=message.message_id)
        if body == "check":
            self.checked.set()
        if body == "rollback":
            return TransactionResolution.ROLLBACK
        return TransactionResolution.COMMIT


def transaction(config: ClientConfiguration, topic: str, group: str) -> None:
    """Three half messages: one committed, one rolled back, one left open until the
    broker's check (which commits it); then receive what consumers may see."""
    checker = CommitWhenChecked()
    producer = Producer(config, (topic,), checker, tls_enable=TLS)
    producer.startup()
    try:
        for body in ("commit", "rollback", "check"):
            message = Message()
            message.topic = topic
            message.body = body.encode()
            tx = producer.begin_transaction()
            receipt = producer.send(message, tx)
            emit("sent", body=body, message_id=receipt.message_id)
            if body == "commit":
                tx.commit()
            elif body == "rollback":
                tx.rollback()
        emit("check_seen", ok=checker.checked.wait(DEADLINE_S))
    finally:
        producer.shutdown()
    consumer = started_consumer(config, topic, group)
    try:
        for message in receive_until(consumer, 2, invisible_s=20):
            emit("received", **describe(message))
            consumer.ack(message)
        emit("quiet", count=len(consumer.receive(16, 20)))
    finally:
        consumer.shutdown()


def acl(config: ClientConfiguration, topic: str, group: str) -> None:
    """Send one message, then receive it; each step either works or is refused (the
    exception's class, as the client raised it, is what the test reads)."""
    producer = Producer(config, (topic,), tls_enable=TLS)
    producer.startup()
    try:
        message = Message()
        message.topic = topic
        message.body = b"signed"
        producer.send(message)
        emit("sent")
    except Exception as exc:
        emit("refused", step="send", kind=type(exc).__name__, text=str(exc)[:300])
    finally:
        producer.shutdown()
    consumer = started_consumer(config, topic, group)
    try:
        for message in receive_until(consumer, 1, invisible_s=20):
            emit("received", body=message.body.decode())
            consumer.ack(message)
    except Exception as exc:
        emit("refused", step="receive", kind=type(exc).__name__, text=str(exc)[:300])
    finally:
        consumer.shutdown()


def main() -> None:
    scenario, proxy, topic, group = sys.argv[1:5]
    # G5_AK / G5_SK: the ACL account the client signs with (none by default).
    credentials = Credentials(os.environ.get("G5_AK", ""), os.environ.get("G5_SK", ""))
    config = ClientConfiguration(proxy, credentials, request_timeout=5)
    {
        "simple": simple,
        "filtered": filtered,
        "push": push,
        "fifo": fifo,
        "push_dlq": push_dlq,
        "sql": sql,
        "delay": delay,
        "before_kill": before_kill,
        "after_kill": after_kill,
        "transaction": transaction,
        "acl": acl,
        "send_for": send_for,
        "receive_all": receive_all,
    }[scenario](config, topic, group)
    emit("end")


if __name__ == "__main__":
    main()
