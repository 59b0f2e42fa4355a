"""protocol/acl_guard.py on real files: load at start, reload on change, keep the old
accounts when the file goes bad or away; the warning for a non-loopback bind."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from protocol import trust
from protocol.acl import AclConfigError
from protocol.acl_guard import (
    AclGuard,
    is_loopback,
    open_guard,
    warn_if_exposed,
)

ONE = "accounts:\n  - {accessKey: first_key, secretKey: first_secret}\n"
TWO = ONE + "  - {accessKey: second_key, secretKey: second_secret, admin: true}\n"


def test_reload_on_change_and_keep_on_bad_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "plain_acl.yml"
    path.write_text(ONE)
    guard = AclGuard(path, name="test")
    assert set(guard.config.accounts) == {"first_key"}
    assert not guard.poll()  # unchanged
    path.write_text(TWO)
    assert guard.poll()
    assert set(guard.config.accounts) == {"first_key", "second_key"}
    assert guard.config.accounts["second_key"].admin
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        path.write_text("accounts: [ {accessKey: broken")
        assert not guard.poll()
        assert not guard.poll()  # the same bad file: no second line
    assert set(guard.config.accounts) == {"first_key", "second_key"}
    assert len(caplog.records) == 1
    assert "not reloaded, keeping the accounts in force" in caplog.records[0].getMessage()
    path.unlink()
    assert not guard.poll()
    assert set(guard.config.accounts) == {"first_key", "second_key"}
    path.write_text(ONE)
    assert guard.poll()
    assert set(guard.config.accounts) == {"first_key"}


async def test_watch_picks_up_a_change(tmp_path: Path) -> None:
    path = tmp_path / "plain_acl.yml"
    path.write_text(ONE)
    guard = AclGuard(path, name="test", poll_interval_s=0.05)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(guard.watch)
            path.write_text(TWO)
            while guard.reloads == 0:  # noqa: ASYNC110 (the guard polls a file)
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    assert "second_key" in guard.config.accounts


def test_start_needs_a_good_file(tmp_path: Path) -> None:
    assert open_guard(False, None, name="test") is None
    with pytest.raises(AclConfigError, match="no plain-access file"):
        open_guard(True, None, name="test")
    missing = tmp_path / "nope.yml"
    with pytest.raises(AclConfigError, match=r"nope\.yml: cannot read the ACL file"):
        open_guard(True, missing, name="test")
    bad = tmp_path / "bad.yml"
    bad.write_text("accounts: [{accessKey: ab, secretKey: abcdefgh}]")
    with pytest.raises(AclConfigError, match=r"bad\.yml: accounts\[0\]: accessKey"):
        open_guard(True, bad, name="test")


def test_warning_for_a_non_loopback_bind_without_acl(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("") and not is_loopback("example.com")
    path = tmp_path / "plain_acl.yml"
    path.write_text(ONE)
    path.chmod(0o600)
    guard = AclGuard(path, name="test")
    with caplog.at_level(logging.WARNING):
        assert not warn_if_exposed("127.0.0.1", None, name="ns")
        assert not warn_if_exposed("0.0.0.0", guard, name="ns")
        assert warn_if_exposed("0.0.0.0", None, name="ns")
    [record] = caplog.records
    assert "listening on 0.0.0.0 without ACL" in record.getMessage()


def test_warning_for_a_secret_file_others_can_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "plain_acl.yml"
    path.write_text(ONE)
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING):
        AclGuard(path, name="test")
        assert not caplog.records
        path.chmod(0o644)
        AclGuard(path, name="test")
    [record] = caplog.records
    assert "ACL file" in record.getMessage()
    assert "readable by other users (mode 644): chmod 600 it" in record.getMessage()
    assert not trust.warn_if_others_can_read(tmp_path / "gone", "x", logging.warning)
