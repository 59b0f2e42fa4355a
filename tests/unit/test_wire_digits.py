"""Digits off the wire: ``str.isdigit`` takes "²", "٣" and other Unicode digits, some of
which ``int()`` refuses, and ``"--5".lstrip("-")`` looks like digits too. None of these may
reach ``int()`` unchecked: a client's property or header field must get a clear refusal or
be ignored, never an exception out of a handler or a background loop (a transactional
half message with such a property stopped every transaction check of its broker)."""

from __future__ import annotations

import pytest
import trio

from broker.config import ConfigError, parse_delay_levels
from broker.ha.stream import connect
from broker.slavesync import parse_consumer_offsets
from broker.store.dispatch import StoreDispatch
from broker.timers import park_due_ms
from client.admin_values import BrokerRuntime
from controller.config import ConfigError as ControllerConfigError
from controller.config import _check_address
from protocol.command import RemotingCommand
from protocol.errors import ConnectionLost, MalformedBody
from protocol.message import int_property
from protocol.rpc import split_address
from protocol.trust import TIMESTAMP_FIELD, check, sign

#: Text that str.isdigit (or isdigit after lstrip("-")) takes and int() refuses or should.
HOSTILE = ["²", "٣", "-²", "--5", "5²", "1_000", " 5", "9" * 19, "", "-"]


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0), ("42", 42), ("-7", -7), ("9" * 18, int("9" * 18))] + [(t, None) for t in HOSTILE],
)
def test_int_property_takes_ascii_longs_only(text: str, value: int | None) -> None:
    assert int_property(text) == value


@pytest.mark.parametrize("text", HOSTILE)
def test_a_delay_level_that_is_no_number_is_no_delay(text: str) -> None:
    properties = {"DELAY": text}
    assert park_due_ms(properties, "T", now_ms=1000, max_delay_s=60) is None


@pytest.mark.parametrize("text", ["²", "9" * 25, "-5"])
def test_a_timer_records_due_time_that_is_no_long_is_a_tag_hash(text: str) -> None:
    code = StoreDispatch._tags_code(
        object(),  # type: ignore[arg-type]  # reads only its arguments for this topic
        "rmq_sys_wheel_timer",
        {"TIMER_OUT_MS": text, "TAGS": "t"},
        0,
    )
    assert 0 <= code < 2**63


@pytest.mark.parametrize("text", ["²", "1²"])
def test_a_cluster_signature_with_a_unicode_timestamp_is_refused_with_a_reason(text: str) -> None:
    signed = sign(RemotingCommand.request(10), b"secret", now_ms=1000)
    forged = RemotingCommand.request(10, {**signed.ext_fields, TIMESTAMP_FIELD: text})
    reason = check(forged, b"secret", now_ms=1000)
    assert reason is not None and TIMESTAMP_FIELD in reason


@pytest.mark.parametrize("port", ["²", "٣", "-1"])
def test_addresses_with_unicode_digit_ports_are_refused_with_their_own_errors(port: str) -> None:
    with pytest.raises(ValueError, match="is not host:port"):
        split_address(f"127.0.0.1:{port}")
    with pytest.raises(ControllerConfigError, match="is not host:port"):
        _check_address(f"127.0.0.1:{port}", "controller")
    with pytest.raises(ConnectionLost, match="bad HA address"):
        trio.run(lambda: connect(f"127.0.0.1:{port}", timeout_s=1.0))


def test_config_and_copied_tables_refuse_unicode_digits_with_their_own_errors() -> None:
    with pytest.raises(ConfigError, match="delay level"):
        parse_delay_levels("1s ²s")
    with pytest.raises(MalformedBody, match="not a non-negative integer"):
        parse_consumer_offsets(b'{"offsetTable": {"T@g": {"\\u00b2": 5}}}')


@pytest.mark.parametrize("text", HOSTILE)
def test_a_runtime_table_value_that_is_no_number_reads_as_none(text: str) -> None:
    runtime = BrokerRuntime(
        cluster="c", broker_name="b", broker_id=0, addr="a", table={"commitLogMaxOffset": text}
    )
    assert runtime._int("commitLogMaxOffset") is None
