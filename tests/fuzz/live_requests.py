"""Hostile requests for a live server: every request code it serves, with mutated fields.

A request keeps most of its header valid (the fields its header class names, with values
that reach past the first checks) and makes one or two fields hostile: numbers that no
Java int holds, NaN, Unicode digits, lone surrogates, path-like and oversized names,
property strings with the keys the broker reads. Bodies are the decoders' seeds
(tests/fuzz/targets.py), mutated, or random bytes. What a server owes each of them
(``Verdict``): an answer within the deadline that is no "internal error" (an exception
the handler did not expect); afterwards the server still serves.

``python -m tests.fuzz.live_requests --target broker|namesrv|controller --count N --seed S``
runs a long session and prints each finding with the request that caused it.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import attrs
import trio

from protocol.codes import RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.headers import Header
from protocol.message import properties_to_string
from protocol.rpc import RemotingClient
from tests.fuzz import targets

#: Numbers as text: in and out of Java int / long, floats, and what Python's int() takes
#: but Java's parseInt does not (or the reverse).
HOSTILE_NUMBERS = (
    "0", "1", "3", "7", "-1", "2147483647", "-2147483648", "2147483648",
    "9223372036854775807", "-9223372036854775808", "9223372036854775808",
    "99999999999999999999", "1e400", "NaN", "Infinity", "²", "١٢", "", "-", " 1", "+1",
    "0x10", "1.5", "1_000", "9" * 4301, "-0", "00000000000000000000001",
)  # fmt: skip
#: Names as text: existing and system names, illegal characters, a lone surrogate.
HOSTILE_TEXT = (
    "T", "G", "%RETRY%G", "%DLQ%G", "TBW102", "SCHEDULE_TOPIC_XXXX",
    "RMQ_SYS_TRANS_HALF_TOPIC", "rmq_sys_wheel_timer", "", "a" * 300, "../../etc/passwd",
    "\x00", "é", "a b", "*", "||", "TagA || TagB", "a > 1 AND", "127.0.0.1:1",
    "DefaultCluster", "broker-a", "T" * 128, "%RETRY%", "SQL92", "TAG", "\ud800", "k" * 5000,
)  # fmt: skip
#: Message property keys the broker reads.
PROPERTY_KEYS = (
    "DELAY", "TIMER_DELIVER_MS", "TIMER_DELAY_SEC", "TIMER_DELAY_MS", "__STARTDELIVERTIME",
    "TRAN_MSG", "PGROUP", "CHECK_IMMUNITY_TIME_IN_SECONDS", "MAX_OFFSET", "MIN_OFFSET",
    "REAL_QID", "REAL_TOPIC", "UNIQ_KEY", "WAIT", "KEYS", "TAGS", "RETRY_TOPIC",
    "RECONSUME_TIME", "MAX_RECONSUME_TIMES", "TRANSACTION_CHECK_TIMES", "ORIGIN_MESSAGE_ID",
    "CLUSTER", "INNER_MULTI_DISPATCH", "INNER_MULTI_QUEUE_OFFSET", "TIMER_OUT_MS",
    "TIMER_ENQUEUE_MS", "TIMER_DEQUEUE_MS", "TIMER_ROLL_TIMES", "__SHARDINGKEY",
    "TRACE_ON", "POP_CK", "1ST_POP_TIME", "__transactionId__", "DELAY_TIME_LEVEL",
)  # fmt: skip
#: Broker settings for UPDATE_BROKER_CONFIG bodies.
CONFIG_KEYS = (
    "flushIntervalCommitLog", "maxMessageSize", "brokerPermission", "fileReservedTime",
    "messageDelayLevel", "autoCreateTopicEnable", "slaveReadEnable", "syncFlushTimeout",
    "slaveTimeout", "request_timeout_s", "transactionTimeOut", "brokerRole",
    "defaultTopicQueueNums", "haSendHeartbeatInterval", "minInSyncReplicas", "listenPort",
)  # fmt: skip
#: Header fields read without a header class, and the valid value each usually gets.
VALID_TEXT = {
    "topic": "T", "b": "T", "consumerGroup": "G", "group": "G", "producerGroup": "PG",
    "a": "PG", "c": "TBW102", "defaultTopic": "TBW102", "subscription": "*",
    "expressionType": "TAG", "clusterName": "DefaultCluster", "brokerName": "broker-a",
    "key": "k",
}  # fmt: skip
#: Requests whose body a decoder target's seeds stand for.
BODY_TARGETS = {
    RequestCode.HEART_BEAT: "body/HeartbeatData",
    RequestCode.LOCK_BATCH_MQ: "body/LockBatchRequestBody",
    RequestCode.UNLOCK_BATCH_MQ: "body/LockBatchRequestBody",
    RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP: "body/SubscriptionGroupConfig",
    RequestCode.SEND_BATCH_MESSAGE: "batch",
    RequestCode.CHECK_CLIENT_CONFIG: "body/CheckClientRequestBody",
}
#: Requests that share another's header.
SAME_HEADER = {
    RequestCode.LITE_PULL_MESSAGE: RequestCode.PULL_MESSAGE,
    RequestCode.SEND_BATCH_MESSAGE: RequestCode.SEND_MESSAGE_V2,
}


@attrs.frozen
class Field:
    wire: str
    kind: type
    required: bool


def _header_classes() -> Iterator[type[Header]]:
    stack: list[type[Header]] = [Header]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            stack.append(sub)
            yield sub


def _catalogue() -> tuple[dict[int, list[tuple[Field, ...]]], dict[str, type]]:
    by_code: dict[int, list[tuple[Field, ...]]] = {}
    kinds: dict[str, type] = {}
    for cls in _header_classes():
        if not attrs.has(cls):  # a slotted class's pre-decoration original, not yet collected
            continue
        fields = tuple(
            Field(s.wire, s.kind, s.required)
            for s in cls._field_specs()  # the header class describes its own fields
        )
        for f in fields:
            kinds.setdefault(f.wire, f.kind)
        if cls.CODE is not None:
            by_code.setdefault(cls.CODE, []).append(fields)
    for alias, code in SAME_HEADER.items():
        if code in by_code:
            by_code[alias] = by_code[code]
    return by_code, kinds


HEADERS_BY_CODE, FIELD_KINDS = _catalogue()
FIELD_NAMES = sorted(FIELD_KINDS)
SEEDS_BY_TARGET = {t.name: list(t.seeds) for t in targets.all_targets()}
ALL_SEEDS = [seed for seeds in SEEDS_BY_TARGET.values() for seed in seeds]


def property_string(rng: random.Random) -> str:
    pairs = {
        rng.choice(PROPERTY_KEYS) if rng.random() < 0.9 else rng.choice(HOSTILE_TEXT): rng.choice(
            HOSTILE_NUMBERS + HOSTILE_TEXT
        )
        for _ in range(rng.randint(0, 5))
    }
    try:
        text = properties_to_string(pairs)
    except ValueError:  # our encoder refuses some keys (empty, separators): a junk string
        text = "".join(f"{k}\x01{v}\x02" for k, v in pairs.items())
    if rng.random() < 0.1:
        text += rng.choice(["\x01", "\x02", "\x01\x02", "a\x01", "\x02b"])
    return text


def pop_handle(rng: random.Random) -> str:
    """A well-formed pop handle (``extraInfo``) whose numbers may name nothing real."""
    numbers = ("0", "1", "5", "7", "2147483647", "9223372036854775807", "1700000000000")
    return " ".join(
        (
            rng.choice(numbers),
            rng.choice(numbers),
            rng.choice(("60000", "0", "9223372036854775807")),
            rng.choice(("0", "1", "7", "8", "999")),
            rng.choice(("0", "1", "2")),
            rng.choice(("broker-a", "x")),
            rng.choice(("0", "1", "7", "2147483647")),
            rng.choice(numbers),
        )
    )


def hostile_value(wire: str, kind: type | None, rng: random.Random) -> str:
    if wire in ("properties", "i"):
        return property_string(rng)
    if wire == "extraInfo" and rng.random() < 0.7:
        return pop_handle(rng)
    if kind is int and rng.random() < 0.8:
        return rng.choice(HOSTILE_NUMBERS)
    if kind is bool and rng.random() < 0.7:
        return rng.choice(["true", "false", "TRUE", "1", "", "yes"])
    return rng.choice(HOSTILE_TEXT + HOSTILE_NUMBERS)


def valid_value(f: Field) -> str:
    if f.kind is int:
        return "1" if "Nums" in f.wire or "max" in f.wire.lower() else "0"
    if f.kind is bool:
        return "false"
    return VALID_TEXT.get(f.wire, "T")


def ext_fields(code: int, rng: random.Random) -> dict[str, str]:
    """Mostly valid fields of ``code``'s header with one or two hostile; else random ones."""
    headers = HEADERS_BY_CODE.get(code)
    ext: dict[str, str] = {}
    if headers and rng.random() < 0.9:
        fields = rng.choice(headers)
        hostile = set(rng.sample(range(len(fields)), min(len(fields), rng.randint(1, 2))))
        for i, f in enumerate(fields):
            if i in hostile:
                if rng.random() < 0.9:  # else the field is missing
                    ext[f.wire] = hostile_value(f.wire, f.kind, rng)
            elif f.required or rng.random() < 0.7:
                ext[f.wire] = valid_value(f)
        return ext
    for name in rng.sample(FIELD_NAMES, rng.randint(0, 12)):
        ext[name] = hostile_value(name, FIELD_KINDS[name], rng)
    return ext


def body(code: int, rng: random.Random) -> bytes:
    if code == RequestCode.UPDATE_BROKER_CONFIG:
        lines = [
            f"{rng.choice(CONFIG_KEYS)}={rng.choice(HOSTILE_NUMBERS + HOSTILE_TEXT)}"
            for _ in range(rng.randint(1, 3))
        ]
        return "\n".join(lines).encode("utf-8", "surrogatepass")
    seeds = SEEDS_BY_TARGET.get(BODY_TARGETS.get(code, ""))
    if seeds and rng.random() < 0.8:
        seed = rng.choice(seeds)
        if rng.random() < 0.3:
            return seed
        return targets.mutate_json(seed, rng) if seed[:1] in b"{[" else targets.mutate(seed, rng)
    roll = rng.random()
    if roll < 0.3:
        return b""
    if roll < 0.5:
        return rng.randbytes(rng.randint(1, 200))
    seed = rng.choice(ALL_SEEDS)
    return targets.mutate(seed, rng) if rng.random() < 0.5 else seed


def hostile_request(codes: Sequence[int], rng: random.Random) -> RemotingCommand:
    code = rng.choice(codes)
    return RemotingCommand.request(code, ext_fields(code, rng), body(code, rng))


@attrs.define
class Verdict:
    """What a session of hostile requests drew from a server."""

    requests: int = 0
    #: One line per distinct failure: no answer, or an answer that is an internal error.
    findings: list[str] = attrs.field(factory=list)
    answers: dict[int, int] = attrs.field(factory=dict)

    def judge(self, request: RemotingCommand, response: RemotingCommand | BaseException) -> None:
        self.requests += 1
        code = request.code
        name = RequestCode(code).name if code in RequestCode._value2member_map_ else str(code)
        shown = f"ext={ascii(request.ext_fields)[:300]} body={request.body[:60]!r}"
        if isinstance(response, BaseException):
            self.findings.append(f"{name}: no answer ({type(response).__name__}) {shown}")
            return
        self.answers[response.code] = self.answers.get(response.code, 0) + 1
        remark = response.remark or ""
        if response.code == ResponseCode.SYSTEM_ERROR and remark.startswith("internal error"):
            first = f"{name}: {ascii(remark)[:160]}"
            if not any(f.startswith(first) for f in self.findings):
                self.findings.append(f"{first} {shown}")


async def session(
    client: RemotingClient,
    addrs: Callable[[], str],
    codes: Sequence[int],
    *,
    count: int,
    seed: int,
    answer_timeout_s: float = 6.0,
) -> Verdict:
    """``count`` hostile requests, one at a time, each to ``addrs()``; every one judged."""
    rng = random.Random(seed)
    verdict = Verdict()
    for _ in range(count):
        request = hostile_request(codes, rng)
        try:
            with trio.fail_after(answer_timeout_s + 2):
                response: RemotingCommand | BaseException = await client.call(
                    addrs(), request, timeout_s=answer_timeout_s
                )
        except Exception as exc:  # judged below: no answer is a finding
            response = exc
        verdict.judge(request, response)
    return verdict


async def _run(target: str, count: int, seed: int) -> Verdict:
    from tests.component.broker_fixtures import broker_env
    from tests.component.controller_fixtures import controller_quorum
    from tests.fuzz.test_fuzz_live import broker_session, controller_session

    with tempfile.TemporaryDirectory() as directory:
        if target == "controller":
            async with controller_quorum(Path(directory), nodes=1) as quorum:
                return await controller_session(quorum, count=count, seed=seed)
        async with broker_env(Path(directory)) as env:
            return await broker_session(env, target, count=count, seed=seed)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=["broker", "namesrv", "controller"], default="broker")
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    verdict = trio.run(_run, args.target, args.count, args.seed)
    print(f"{verdict.requests} requests; answers by code {sorted(verdict.answers.items())}")
    for finding in verdict.findings:
        print("FINDING", finding)
    return 1 if verdict.findings else 0


if __name__ == "__main__":
    sys.exit(main())
