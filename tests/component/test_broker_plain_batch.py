"""SEND_BATCH_MESSAGE's straight path (``SendProcessor._send_plain_batch``) against the
dict path, which stays the definition: the same batch, sent once through each on one
broker, stores the same records and gets the same answer (or the same refusal).

The straight path is taken where it should be (a spy counts it), and left for the dict
path wherever a message is not plain or its properties are not canonical.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from protocol.batch_body import encode_batch_items
from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.headers import QueryMessageRequestHeader, SendMessageRequestHeaderV2
from protocol.message import MessageRecord, iter_records
from tests.component.broker_fixtures import TEST_DEADLINE_S, broker_env, now_ms, send_header

S1, S2 = "\x01", "\x02"


def _props(*pairs: tuple[str, str]) -> bytes:
    return "".join(f"{k}{S1}{v}{S2}" for k, v in pairs).encode()


PLAIN = "plain"
DICT = "dict"

#: name -> (the batch's items as (body, flag, properties bytes), the path that stores it)
CASES: dict[str, tuple[list[tuple[bytes, int, bytes]], str]] = {
    "no properties": ([(b"a", 0, b""), (b"", 3, b"")], PLAIN),
    "tags keys and user properties": (
        [
            (b"x" * 100, i, _props(("TAGS", f"t{i}"), ("KEYS", f"k{i} k"), ("ünï", "välue")))
            for i in range(6)
        ],
        PLAIN,
    ),
    "some given UNIQ_KEYs": (
        [
            (b"u", 0, _props(("UNIQ_KEY", "0A0B0C0D00002A2A0000000100000001"), ("a", "1"))),
            (b"v", 0, _props(("a", "2"))),
        ],
        PLAIN,
    ),
    "this cluster named": ([(b"c", 0, _props(("CLUSTER", "DefaultCluster"), ("a", "b")))], PLAIN),
    "another cluster named": ([(b"c", 0, _props(("a", "b"), ("CLUSTER", "Other")))], DICT),
    "a duplicate key": ([(b"d", 0, _props(("a", "1"), ("a", "2")))], DICT),
    "no last separator": ([(b"n", 0, f"a{S1}b{S2}c{S1}d".encode())], DICT),
    "a level-0 DELAY": ([(b"z", 0, _props(("DELAY", "0"), ("TAGS", "x")))], DICT),
    "one message of many not plain": (
        [(b"p", 0, _props(("TAGS", "x")))] * 3 + [(b"q", 0, _props(("DELAY", "0")))],
        DICT,
    ),
}

#: name -> a batch body both paths must refuse alike
REFUSED: dict[str, bytes] = {
    "a DELAY level": encode_batch_items([(b"a", 0, _props(("DELAY", "3")))]),
    "a timer": encode_batch_items([(b"a", 0, _props(("TIMER_DELAY_SEC", "5")))]),
    "a transaction": encode_batch_items([(b"a", 0, _props(("TRAN_MSG", "true")))]),
    "a torn body": encode_batch_items([(b"abc", 0, _props(("a", "b")))])[:-3],
    "bad UTF-8": encode_batch_items([(b"abc", 0, b"a\x01\xff\xfe\x02")]),
    "empty": b"",
}


def _uniq_keys() -> Iterator[str]:
    return (f"{i:032X}" for i in itertools.count(1))


class _Paths:
    """Counts what the straight path stored; ``off`` sends every batch down the dict path."""

    def __init__(self, processor: Any) -> None:
        self.plain = 0
        self.off = False
        real = processor._send_plain_batch

        def spy(*args: Any) -> Any:
            if self.off:
                return None
            result = real(*args)
            self.plain += result is not None
            return result

        processor._send_plain_batch = spy


async def _send_both(
    tmp_path: Path, body: bytes
) -> tuple[list[RemotingCommand], list[list[MessageRecord]], int]:
    """The batch through the straight path (where it takes it) and then through the dict
    path, each from a fresh UNIQ_KEY sequence: the answers, each one's stored records, and
    how many batches the straight path stored."""
    async with broker_env(tmp_path) as env:
        await env.create_topic("T", queues=2)
        paths = _Paths(env.b.processors[1])
        answers, stored = [], []
        born = now_ms()
        for queue_id, off in ((0, False), (1, True)):
            paths.off = off
            keys = _uniq_keys()
            env.b.next_uniq_key = lambda keys=keys: next(keys)  # type: ignore[method-assign]
            header = SendMessageRequestHeaderV2.from_v1(
                attrs.evolve(send_header("T", queue_id=queue_id, batch=True), born_timestamp=born)
            )
            answers.append(await env.call(RequestCode.SEND_BATCH_MESSAGE, header, body))
            stored.append(await env.pull_all("T", queue_id))
        return answers, stored, paths.plain


def _same_record(a: MessageRecord, b: MessageRecord) -> None:
    for field in ("body", "flag", "sys_flag", "topic", "queue_offset", "born_host"):
        assert getattr(a, field) == getattr(b, field), field
    assert a.born_timestamp_ms == b.born_timestamp_ms
    assert a.reconsume_times == b.reconsume_times == 0
    assert list(a.properties.items()) == list(b.properties.items())  # order: the same bytes


@pytest.mark.parametrize("name", list(CASES))
async def test_a_batch_stores_what_the_dict_path_stores(tmp_path: Path, name: str) -> None:
    items, path = CASES[name]
    with trio.fail_after(TEST_DEADLINE_S):
        answers, stored, plain = await _send_both(tmp_path, encode_batch_items(items))
    assert plain == (1 if path == PLAIN else 0)
    for answer in answers:
        assert answer.code == ResponseCode.SUCCESS, answer.remark
        assert answer.ext_fields["queueOffset"] == "0"
        assert len(answer.ext_fields["msgId"].split(",")) == len(items)
    straight, by_dict = stored
    assert len(straight) == len(by_dict) == len(items)
    for a, b, (body, flag, _) in zip(straight, by_dict, items, strict=True):
        _same_record(a, b)
        assert (a.body, a.flag) == (body, flag)
        assert a.properties["CLUSTER"] == "DefaultCluster"
        assert a.uniq_key
    for answer, records in zip(answers, stored, strict=True):
        assert answer.ext_fields["msgId"].split(",") == [r.msg_id for r in records]


@pytest.mark.parametrize("name", list(REFUSED))
async def test_a_refused_batch_is_refused_alike(tmp_path: Path, name: str) -> None:
    with trio.fail_after(TEST_DEADLINE_S):
        answers, stored, plain = await _send_both(tmp_path, REFUSED[name])
    assert plain == 0
    straight, by_dict = answers
    assert straight.code != ResponseCode.SUCCESS
    assert (straight.code, straight.remark) == (by_dict.code, by_dict.remark)
    assert stored == [[], []]


async def test_straight_batches_are_found_by_key_and_tag(tmp_path: Path) -> None:
    """What the dispatch reads from the straight path's properties (KEYS to the index,
    TAGS to the ConsumeQueue's tag code) works as for any send."""
    items = [(b"k%d" % i, 0, _props(("TAGS", f"t{i % 2}"), ("KEYS", f"key{i}"))) for i in range(4)]
    with trio.fail_after(TEST_DEADLINE_S):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=1)
            paths = _Paths(env.b.processors[1])
            header = SendMessageRequestHeaderV2.from_v1(send_header("T", queue_id=0, batch=True))
            answer = await env.call(
                RequestCode.SEND_BATCH_MESSAGE, header, encode_batch_items(items)
            )
            assert answer.code == ResponseCode.SUCCESS, answer.remark
            assert paths.plain == 1
            query = QueryMessageRequestHeader(
                topic="T",
                key="key2",
                max_num=64,
                begin_timestamp=0,
                end_timestamp=now_ms() + 60_000,
            )
            found = await env.call(RequestCode.QUERY_MESSAGE, query)
            assert found.code == ResponseCode.SUCCESS, found.remark
            assert [r.body for r in iter_records(found.body)] == [b"k2"]
            tagged = await env.pull_all("T", 0, subscription="t1")
            assert [r.body for r in tagged] == [b"k1", b"k3"]


def _random_batch(rng: random.Random) -> list[tuple[bytes, int, bytes]]:
    """Messages with properties drawn near the edges: separators where they may and may
    not be, a UNIQ_KEY or CLUSTER now and then (this cluster's or another), a DELAY,
    duplicate keys, non-ASCII text and bytes that are no UTF-8."""
    names = ["TAGS", "KEYS", "a", "ü", "UNIQ_KEY", "CLUSTER", "x y", ""]
    values = ["1", "", "DefaultCluster", "Other", "välue", "0", "0A" * 16, " ", "🙂"]
    items = []
    for _ in range(rng.randint(1, 4)):
        pairs = [(rng.choice(names), rng.choice(values)) for _ in range(rng.randint(0, 3))]
        if rng.random() < 0.03:
            pairs.append(("DELAY", rng.choice(["0", "2"])))
        props = _props(*pairs)
        roll = rng.random()
        if roll < 0.03 and props:
            props = props[:-1]  # no last separator
        elif roll < 0.05:
            props += b"\xff"  # not UTF-8
        elif roll < 0.07:
            props = props.replace(S1.encode(), b"", 1)  # a pair without its name separator
        items.append((rng.randbytes(rng.randint(0, 64)), rng.randint(0, 3), props))
    return items


async def test_random_batches_store_what_the_dict_path_stores(tmp_path: Path) -> None:
    """150 batches drawn by a seeded generator, each sent through the straight path (queue
    0) and the dict path (queue 1): the same answers, or refusals, and the same records."""
    rng = random.Random(1404)
    with trio.fail_after(TEST_DEADLINE_S * 4):
        async with broker_env(tmp_path) as env:
            await env.create_topic("T", queues=2)
            paths = _Paths(env.b.processors[1])
            born = now_ms()
            straight = 0
            for n in range(150):
                body = encode_batch_items(_random_batch(rng))
                answers = []
                before = [await _end_offset(env, q) for q in (0, 1)]
                for queue_id, off in ((0, False), (1, True)):
                    paths.off = off
                    keys = _uniq_keys()
                    env.b.next_uniq_key = lambda keys=keys: next(keys)  # type: ignore[method-assign]
                    header = SendMessageRequestHeaderV2.from_v1(
                        attrs.evolve(
                            send_header("T", queue_id=queue_id, batch=True), born_timestamp=born
                        )
                    )
                    answers.append(await env.call(RequestCode.SEND_BATCH_MESSAGE, header, body))
                a, b = answers
                assert (a.code, a.remark) == (b.code, b.remark), n
                straight = paths.plain
                if a.code != ResponseCode.SUCCESS:
                    continue
                ids = [len(x.ext_fields["msgId"].split(",")) for x in answers]
                assert ids[0] == ids[1], n
                got = [(await env.pull("T", q, before[q], max_nums=64)).records for q in (0, 1)]
                assert len(got[0]) == len(got[1]) == ids[0], n
                for x, y in zip(*got, strict=True):
                    _same_record_but_offset(x, y)
            assert 30 < straight < 120, straight  # both paths taken, many times each


async def _end_offset(env: Any, queue_id: int) -> int:
    pulled = await env.pull("T", queue_id, 0, max_nums=1)
    return int(pulled.response.ext_fields["maxOffset"])


def _same_record_but_offset(a: MessageRecord, b: MessageRecord) -> None:
    """Equal records (the straight path draws no UNIQ_KEY for a batch it gives up on, so
    the generated ones match too)."""
    for field in ("body", "flag", "sys_flag", "topic", "born_host", "born_timestamp_ms"):
        assert getattr(a, field) == getattr(b, field), field
    assert a.uniq_key
    assert list(a.properties.items()) == list(b.properties.items())
