"""proxy/transactions.py's pure parts: transaction ids and the producer stream registry."""

from __future__ import annotations

import pytest

pytest.importorskip("rocketmq.grpc_protocol")

from rocketmq.grpc_protocol import service_pb2 as sv

from proxy.transactions import InvalidTransactionId, ProducerStreams, parse_transaction_id


def test_a_transaction_id_names_the_half_message() -> None:
    assert parse_transaction_id("4096|7|broker-a") == (4096, 7, "broker-a")
    assert parse_transaction_id("0|0|a|b") == (0, 0, "a|b")  # the name is the rest


@pytest.mark.parametrize(
    "text",
    ["", "garbage", "1|2", "1|2|", "-1|2|b", "1|x|b", "1| 2|b", f"{2**63}|0|b", "1|2|" + "b" * 300],
)
def test_a_transaction_id_the_proxy_did_not_make_is_refused(text: str) -> None:
    with pytest.raises(InvalidTransactionId):
        parse_transaction_id(text)


def test_checks_go_round_robin_to_streams_publishing_the_topic() -> None:
    streams = ProducerStreams(max_streams=3)
    got: list[str] = []
    full = {"b": False}

    def sink(name: str):  # type: ignore[no-untyped-def]
        def put(command: sv.TelemetryCommand) -> bool:
            if full.get(name):
                return False
            got.append(name)
            return True

        return put

    a = streams.add(frozenset({"T"}), sink("a"))
    streams.add(frozenset({"T", "U"}), sink("b"))
    streams.add(frozenset({"U"}), sink("c"))
    assert streams.add(frozenset({"T"}), sink("d")) is None  # capped
    assert streams.topics() == {"T", "U"}
    command = sv.TelemetryCommand()
    for _ in range(4):
        assert streams.offer("T", command)
    assert sorted(got) == ["a", "a", "b", "b"]
    got.clear()
    full["b"] = True  # a stream that cannot take it: the next one does
    assert streams.offer("T", command) and streams.offer("T", command)
    assert got == ["a", "a"]
    streams.remove(a)
    assert not streams.offer("T", command)  # only the full one is left
    assert not streams.offer("V", command)
