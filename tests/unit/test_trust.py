"""The cluster secret: request signatures and the HA challenge (protocol/trust.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import trust
from protocol.codes import RequestCode
from protocol.command import RemotingCommand

SECRET = b"0123456789abcdef-the-secret"
NOW_MS = 1_765_000_000_000


def register(ext: dict[str, str] | None = None, body: bytes = b"{}") -> RemotingCommand:
    fields = {"brokerName": "broker-a", "brokerId": "0", "brokerAddr": "127.0.0.1:10911"}
    return RemotingCommand.request(RequestCode.REGISTER_BROKER, {**fields, **(ext or {})}, body)


def test_signed_request_passes_and_unsigned_is_refused() -> None:
    request = register()
    assert trust.check(request, SECRET, now_ms=NOW_MS) is not None
    signed = trust.sign(request, SECRET, now_ms=NOW_MS)
    assert signed.ext_fields[trust.TIMESTAMP_FIELD] == str(NOW_MS)
    assert trust.check(signed, SECRET, now_ms=NOW_MS + 1000) is None
    assert "another secret" in (trust.check(signed, b"x" * 20, now_ms=NOW_MS) or "")


@pytest.mark.parametrize(
    "change",
    [
        {"brokerId": "1"},  # a changed value
        {"extra": "1"},  # an added field
        {"brokerName": "broker-a", "brokerAddr": "127.0.0.1:10912"},
    ],
)
def test_any_change_breaks_the_signature(change: dict[str, str]) -> None:
    signed = trust.sign(register(), SECRET, now_ms=NOW_MS)
    tampered = RemotingCommand.request(signed.code, {**signed.ext_fields, **change}, signed.body)
    assert trust.check(tampered, SECRET, now_ms=NOW_MS) is not None


def test_body_and_code_are_covered() -> None:
    signed = trust.sign(register(), SECRET, now_ms=NOW_MS)
    other_body = RemotingCommand.request(signed.code, signed.ext_fields, b'{"x":1}')
    other_code = RemotingCommand.request(
        RequestCode.UNREGISTER_BROKER, signed.ext_fields, signed.body
    )
    assert trust.check(other_body, SECRET, now_ms=NOW_MS) is not None
    assert trust.check(other_code, SECRET, now_ms=NOW_MS) is not None


def test_stale_or_bad_timestamps_are_refused() -> None:
    signed = trust.sign(register(), SECRET, now_ms=NOW_MS)
    late = NOW_MS + trust.MAX_SKEW_MS + 1
    assert "clock" in (trust.check(signed, SECRET, now_ms=late) or "")
    bad = RemotingCommand.request(
        signed.code, {**signed.ext_fields, trust.TIMESTAMP_FIELD: "-5"}, signed.body
    )
    assert "ClusterTimestamp" in (trust.check(bad, SECRET, now_ms=NOW_MS) or "")


def test_composes_with_acl_fields() -> None:
    """ACL's AccessKey/Signature/SecurityToken added after ours leave ours valid."""
    signed = trust.sign(register(), SECRET, now_ms=NOW_MS)
    with_acl = RemotingCommand.request(
        signed.code,
        {**signed.ext_fields, "AccessKey": "rocketmq2", "Signature": "abc=", "SecurityToken": "t"},
        signed.body,
    )
    assert trust.check(with_acl, SECRET, now_ms=NOW_MS) is None


@given(
    st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=6),
    st.binary(max_size=64),
)
def test_content_is_unambiguous(ext: dict[str, str], body: bytes) -> None:
    """Moving bytes between a key, a value and the body changes the signed content."""
    content = trust.signed_content(1, ext, body)
    if ext:
        key = sorted(ext)[0]
        moved = {**ext, key: ext[key] + "x"}
        assert trust.signed_content(1, moved, body) != content
    assert trust.signed_content(1, ext, body + b"x") != content


def test_ha_proof() -> None:
    nonce = bytes(range(trust.HA_NONCE_BYTES))
    hello = b"\x00\x00\x00\x01" + bytes(12)
    challenge = trust.ha_challenge(nonce)
    assert len(challenge) == trust.HA_CHALLENGE_BYTES
    assert trust.parse_ha_challenge(challenge) == nonce
    proof = trust.ha_proof(SECRET, nonce, hello)
    assert len(proof) == trust.HA_PROOF_BYTES
    assert trust.ha_proof_valid(SECRET, nonce, hello, proof)
    assert not trust.ha_proof_valid(SECRET, nonce, hello[:-1] + b"\x01", proof)
    assert not trust.ha_proof_valid(b"another secret!!", nonce, hello, proof)
    with pytest.raises(ValueError, match="no cluster challenge"):
        trust.parse_ha_challenge(hello + b"1234")


def test_secret_file(tmp_path: Path) -> None:
    path = tmp_path / "cluster.secret"
    trust.write_secret(path, "s" * 32)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not trust.others_can_read(path)
    assert trust.load_secret(path) == b"s" * 32
    warnings: list[str] = []
    os.chmod(path, 0o644)
    assert trust.load_secret_warned(path, lambda msg, *a: warnings.append(msg % a)) == b"s" * 32
    assert warnings and "readable by other users (mode 644)" in warnings[0]
    path.write_text("short\n")
    with pytest.raises(trust.SecretError, match="at least"):
        trust.load_secret(path)
    with pytest.raises(trust.SecretError, match="cannot read"):
        trust.load_secret(tmp_path / "missing")
