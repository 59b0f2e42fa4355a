"""mqadmin's argument forms as ``rmq admin`` reads and prints them (cli/admin/common.py)."""

from __future__ import annotations

import datetime

import pytest

from cli.admin.common import parse_timestamp, perm_to_string
from client.admin import AdminError


def test_parse_timestamp_accepts_mqadmins_three_forms() -> None:
    assert parse_timestamp("now", now_ms=1234) == 1234
    assert parse_timestamp(" 1700000000123 ", now_ms=0) == 1700000000123
    local = datetime.datetime(2024, 5, 1, 13, 30, 0, 250_000).astimezone()
    expected = int(local.timestamp() * 1000)
    assert parse_timestamp("2024-05-01#13:30:00:250", now_ms=0) == expected
    for bad in ("yesterday", "2024-13-01#00:00:00:000", "2024-05-01 13:30:00", "-5", ""):
        with pytest.raises(AdminError, match="yyyy-MM-dd#HH:mm:ss:SSS"):
            parse_timestamp(bad, now_ms=0)


def test_perm_strings() -> None:
    assert [perm_to_string(p) for p in (2, 4, 6, 7)] == ["-W-", "R--", "RW-", "RWX"]


def test_version_desc_names_the_release_a_client_announces() -> None:
    from cli.admin.connection import version_desc

    assert version_desc(479) == "V5_3_3"  # MQVersion.CURRENT_VERSION of 5.3.3
    assert version_desc(401) == "V4_9_4"
    assert version_desc(400) == "V4_9_4_SNAPSHOT"
    assert version_desc(212) == "V4_0_0_SNAPSHOT"
    assert version_desc(121) == "V3_4_9"  # what ali-ons announces
