"""Micro-benchmark of the SQL92 filter alone: compile cost and cost per evaluated message.

Usage: python -m bench.micro.filter_bench [--count N] [--repeat R]

For each expression below: compile it once (µs per compile, over ``--count / 100``
compiles), then call ``matches()`` ``--count`` times on each of a matching and a
non-matching property set, ``--repeat`` times; the figure is the best repeat (the least
disturbed by other processes on the machine) in µs per evaluation, the median beside it.
Properties look like a Java producer's: the user's plus TAGS, KEYS, UNIQ_KEY, WAIT.
``record_us`` is what the broker pays per stored message it filters for a pull: the
record (1 KiB body) decoded for its properties, then matched (``broker/filtering.py``).
Prints one line per expression and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Mapping

from bench.measure import percentile
from broker.filter import compile_filter
from broker.filtering import record_filter
from protocol.message import MessageRecord, encode_record

_SYSTEM = {
    "TAGS": "TagA",
    "KEYS": "key-1",
    "UNIQ_KEY": "7F0000010000ABCDEF0100000001",
    "WAIT": "true",
}

#: name -> (expression, properties that match, properties that do not).
CASES: dict[str, tuple[str, dict[str, str], dict[str, str]]] = {
    "typical": (
        "a > 5 AND b IN ('x', 'y')",
        _SYSTEM | {"a": "7", "b": "y"},
        _SYSTEM | {"a": "3", "b": "y"},
    ),
    "string_eq": ("region = 'eu-west'", _SYSTEM | {"region": "eu-west"}, _SYSTEM),
    "tags_or": ("TAGS = 'TagA' OR TAGS = 'TagB'", _SYSTEM, _SYSTEM | {"TAGS": "TagC"}),
    "between_double": (
        "price BETWEEN 9.5 AND 100.25",
        _SYSTEM | {"price": "19.99"},
        _SYSTEM | {"price": "120"},
    ),
    "wide": (
        "(a > 5 AND b IN ('x', 'y', 'z', 'w', 'v')) OR (c IS NOT NULL AND d STARTSWITH 'pre')"
        " OR NOT (e = 'off')",
        _SYSTEM | {"c": "1", "d": "prefix", "e": "off"},
        _SYSTEM | {"a": "1", "b": "q", "e": "off"},
    ),
    "missing_property": ("a > 5 AND b IN ('x', 'y')", _SYSTEM | {"a": "9", "b": "x"}, _SYSTEM),
}


def _per_call_us(call: Callable[[], object], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        call()
    return (time.perf_counter() - start) / count * 1e6


def _evaluations_us(
    matches: Callable[[Mapping[str, str]], bool], props: Mapping[str, str], args: argparse.Namespace
) -> list[float]:
    return [_per_call_us(lambda: matches(props), args.count) for _ in range(args.repeat)]


def bench_case(name: str, args: argparse.Namespace) -> dict[str, float]:
    expression, hit, miss = CASES[name]
    selector = compile_filter(expression)
    assert selector.matches(hit) and not selector.matches(miss), name
    compile_us = _per_call_us(lambda: compile_filter(expression), max(1, args.count // 100))
    hit_us = _evaluations_us(selector.matches, hit, args)
    miss_us = _evaluations_us(selector.matches, miss, args)
    raw = encode_record(
        MessageRecord(
            topic="T",
            body=b"x" * 1024,
            queue_id=0,
            born_timestamp_ms=1,
            born_host=("127.0.0.1", 1),
            store_timestamp_ms=2,
            store_host=("127.0.0.1", 2),
            properties=hit,
        )
    )
    on_record = record_filter(selector)
    record_us = [_per_call_us(lambda: on_record(raw), args.count) for _ in range(args.repeat)]
    row = {
        "compile_us": compile_us,
        "match_us_best": min(hit_us),
        "match_us_p50": percentile(hit_us, 50) or 0.0,
        "miss_us_best": min(miss_us),
        "miss_us_p50": percentile(miss_us, 50) or 0.0,
        "record_us_best": min(record_us),
    }
    print(
        f"{name:>16}: compile {compile_us:7.1f} us | match {row['match_us_best']:.2f} us "
        f"(p50 {row['match_us_p50']:.2f}) | miss {row['miss_us_best']:.2f} us "
        f"(p50 {row['miss_us_p50']:.2f}) | record {row['record_us_best']:.2f} us  {expression}"
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    results = {name: bench_case(name, args) for name in CASES}
    print(json.dumps({"count": args.count, "repeat": args.repeat} | results))


if __name__ == "__main__":
    main()
