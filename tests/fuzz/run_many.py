"""Run many fuzz inputs across every decoder once and report what escaped.

Usage (from the repository root)::

    python -m tests.fuzz.run_many [--inputs 1000000] [--seed 1] [--only NAME] [--out FILE.json]

Inputs are spread evenly over the targets of tests/fuzz/targets.py and derived from
``--seed``, so a finding reproduces from its target, seed and input index. A finding is an
exception other than ``RocketError`` (the project's own errors); the report prints one
line per target (inputs, seconds, findings) and each distinct finding with a hex prefix of
its first input. Exit status 1 when anything was found.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import traceback
from collections import Counter
from typing import Any

from protocol.errors import RocketError
from tests.fuzz.targets import TARGETS, Target, one_input


def run_target(target: Target, inputs: int, seed: int) -> dict[str, Any]:
    """Feed ``inputs`` inputs to ``target``; its figures and distinct findings."""
    rng = random.Random(f"{seed}:{target.name}")
    findings: dict[str, dict[str, Any]] = {}
    counts: Counter[str] = Counter()
    rejected = 0
    slowest_s = 0.0
    start = time.perf_counter()
    for index in range(inputs):
        data = one_input(target, rng)
        began = time.perf_counter()
        try:
            target.run(data, rng)
        except RocketError:
            rejected += 1
        except Exception as exc:
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            key = f"{type(exc).__name__} at {frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}"
            counts[key] += 1
            findings.setdefault(
                key,
                {"message": str(exc)[:200], "index": index, "input_hex": data[:96].hex()},
            )
        slowest_s = max(slowest_s, time.perf_counter() - began)
    return {
        "target": target.name,
        "inputs": inputs,
        "rejected": rejected,
        "seconds": round(time.perf_counter() - start, 2),
        "slowest_input_ms": round(slowest_s * 1000, 1),
        "findings": {key: {**findings[key], "count": counts[key]} for key in findings},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs in all")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", action="append", help="run only these targets")
    parser.add_argument("--out", help="write the report as JSON here")
    args = parser.parse_args(argv)
    names = args.only or sorted(TARGETS)
    per_target = max(1, args.inputs // len(names))
    results = []
    for name in names:
        result = run_target(TARGETS[name], per_target, args.seed)
        results.append(result)
        print(
            f"{name:45s} {result['inputs']:>8d} inputs {result['seconds']:>7.1f} s "
            f"(slowest {result['slowest_input_ms']:.1f} ms) "
            f"{len(result['findings'])} findings",
            flush=True,
        )
        for key, finding in result["findings"].items():
            print(f"    {finding['count']}x {key}: {finding['message']}")
            print(f"       first input #{finding['index']}: {finding['input_hex']}")
    total_inputs = sum(r["inputs"] for r in results)
    total_s = sum(r["seconds"] for r in results)
    found = sum(len(r["findings"]) for r in results)
    print(f"{len(results)} targets, {total_inputs} inputs, {total_s:.0f} s, {found} findings")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"seed": args.seed, "targets": results}, f, indent=1)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
