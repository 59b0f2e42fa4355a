"""proxy/acl.py's pure parts against the official client's own signing code."""

from __future__ import annotations

import pytest

pytest.importorskip("rocketmq.v5")

from rocketmq.v5.util.signature import Signature

from proxy.acl import parse_authorization, peer_host, sign


def test_our_signature_is_the_official_clients() -> None:
    assert sign("a_secret_key", "20261206T070000Z") == Signature.sign(
        "a_secret_key", "20261206T070000Z"
    )


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (
            "MQv2-HMAC-SHA1 Credential=AK, SignedHeaders=x-mq-date-time, Signature=ab12",
            ("AK", "ab12"),
        ),
        ("MQv2-HMAC-SHA1 Credential=AK/2026/x, SignedHeaders=x, Signature=ff", ("AK", "ff")),
        ("MQv2-HMAC-SHA1 Credential=, SignedHeaders=x-mq-date-time, Signature=ab", None),
        ("MQv2-HMAC-SHA1 Credential=AK", None),
        ("Basic QUs6U0s=", None),
        ("", None),
        ("MQv2-HMAC-SHA1 Credential=AK, Signature=" + "a" * 2000, None),
    ],
)
def test_authorization_values(value: str, parsed: tuple[str, str] | None) -> None:
    assert parse_authorization(value) == parsed


def test_grpc_peers() -> None:
    assert peer_host("ipv4:127.0.0.1:5555") == "127.0.0.1"
    assert peer_host("ipv6:[::1]:5555") == "::1"
    assert peer_host("unix:/tmp/x") == "unix:/tmp/x"
