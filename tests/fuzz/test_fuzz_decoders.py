"""Fuzz every decoder for a bounded number of examples (issue 13: fuzz targets in CI).

Each target (tests/fuzz/targets.py) gets random bytes and mutated valid inputs; nothing
but the project's own errors (``RocketError``) may leave a decoder. The million-input run
is ``python -m tests.fuzz.run_many``.
"""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.errors import RocketError
from protocol.frame import FrameDecoder
from tests.fuzz.targets import BODY_SEEDS, COMMANDS, TARGETS, body_classes, one_input, splits

EXAMPLES_PER_TARGET = 200


@pytest.mark.parametrize("name", sorted(TARGETS))
@settings(
    max_examples=EXAMPLES_PER_TARGET,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(rng=st.randoms(use_true_random=False), raw=st.none() | st.binary(max_size=512))
def test_decoder_raises_only_our_errors(name: str, rng: random.Random, raw: bytes | None) -> None:
    target = TARGETS[name]
    data = one_input(target, rng) if raw is None else raw
    with contextlib.suppress(RocketError):  # our clear errors: what hostile input should get
        target.run(data, rng)


@settings(max_examples=100, deadline=None)
@given(rng=st.randoms(use_true_random=False), count=st.integers(1, 6))
def test_frames_decode_the_same_however_the_stream_is_split(rng: random.Random, count: int) -> None:
    commands = [rng.choice(COMMANDS) for _ in range(count)]
    stream = b"".join(c.encode() if rng.random() < 0.5 else c.encode_binary() for c in commands)
    whole = FrameDecoder().feed(stream)
    decoder = FrameDecoder()
    pieces = [f for chunk in splits(stream, rng) for f in decoder.feed(chunk)]
    assert pieces == whole and len(whole) == count
    assert decoder.buffered_bytes == 0


def test_every_body_class_is_a_target() -> None:
    assert body_classes() <= set(BODY_SEEDS)
    assert {"frame", "header/json", "header/rocketmq", "record", "batch"} <= set(TARGETS)
    assert {"ha/master-side", "ha/slave-side"} <= set(TARGETS)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seeds_are_valid_inputs(name: str) -> None:
    """The first seed decodes (mutations of valid input reach deep); the others decode
    or are refused with our own error (some are hostile on purpose)."""
    target = TARGETS[name]
    target.run(target.seeds[0], random.Random(0))
    for seed in target.seeds[1:]:
        with contextlib.suppress(RocketError):
            target.run(seed, random.Random(0))
