"""ACL 1.0 signatures (protocol/acl_sign.py) against known vectors.

The ali-ons vector was computed by ali-ons 3.12.0's own ``Channel#beforeRequest``
(tests/compat/alions_sign.js; tests/compat/test_alions_acl.py recomputes such vectors live):
a SEND_MESSAGE_V2 with JSON numbers and booleans in its header, body ``hello world``.
"""

from __future__ import annotations

import base64

import pytest

from protocol.acl_sign import (
    ACCESS_KEY,
    SECURITY_TOKEN,
    SIGNATURE,
    Credentials,
    sign_request,
    signature,
    signature_matches,
    signed_content,
    signed_ext_fields,
)
from protocol.command import RemotingCommand
from protocol.frame import FrameDecoder

# node tests/compat/alions_sign.js on {"code": 310, "header": {"a": "PID_test", "b":
# "TopicTest", "c": "TBW102", "d": 4, "e": 1, "f": 0, "g": 1700000000000, "h": 0,
# "i": "TAGS\u0001tagA\u0002", "j": 0, "k": false, "m": false}, body "hello world",
# accessKey RocketMQ, secretKey 12345678}: the frame ali-ons wrote.
ALIONS_FRAME = base64.b64decode(
    "AAABQAAAATF7ImNvZGUiOjMxMCwibGFuZ3VhZ2UiOiJKQVZBIiwib3BhcXVlIjoxLCJmbGFnIjowLCJ2ZXJz"
    "aW9uIjoxMjEsImV4dEZpZWxkcyI6eyJTaWduYXR1cmUiOiJ1UGU3NlAzSEtZamxLMmFpeW50UnA5SFFhV2M9"
    "IiwiQWNjZXNzS2V5IjoiUm9ja2V0TVEiLCJPbnNDaGFubmVsIjoiQUxJWVVOIiwiYSI6IlBJRF90ZXN0Iiwi"
    "YiI6IlRvcGljVGVzdCIsImMiOiJUQlcxMDIiLCJkIjo0LCJlIjoxLCJmIjowLCJnIjoxNzAwMDAwMDAwMDAw"
    "LCJoIjowLCJpIjoiVEFHU1x1MDAwMXRhZ0FcdTAwMDIiLCJqIjowLCJrIjpmYWxzZSwibSI6ZmFsc2V9fWhl"
    "bGxvIHdvcmxk"
)
ALIONS_SIGNATURE = "uPe76P3HKYjlK2aiyntRp9HQaWc="
CREDS = Credentials(access_key="RocketMQ", secret_key="12345678")


def _alions_request() -> RemotingCommand:
    [frame] = FrameDecoder(max_frame_bytes=1 << 20).feed(ALIONS_FRAME)
    return RemotingCommand.from_frame(frame)


def test_hmac_sha1_rfc2202_vector() -> None:
    # RFC 2202 test case 2: key "Jefe", data "what do ya want for nothing?".
    digest = base64.b64decode(signature("Jefe", b"what do ya want for nothing?"))
    assert digest.hex() == "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"


def test_alions_frame_verifies() -> None:
    request = _alions_request()
    assert request.ext_fields[SIGNATURE] == ALIONS_SIGNATURE
    assert request.ext_fields["d"] == "4"  # a JSON number, signed as its text
    assert signature_matches(request.ext_fields, request.body, "12345678")
    assert not signature_matches(request.ext_fields, request.body, "12345679")
    assert not signature_matches(request.ext_fields, request.body + b"!", "12345678")


def test_we_sign_as_alions_does() -> None:
    request = _alions_request()
    unsigned = {k: v for k, v in request.ext_fields.items() if k not in (SIGNATURE, ACCESS_KEY)}
    ext = signed_ext_fields(unsigned, request.body, CREDS)
    assert ext[SIGNATURE] == ALIONS_SIGNATURE


def test_content_is_sorted_values_then_body() -> None:
    ext = {"b": "2", "a": "1", "Signature": "x", "C": "3"}
    assert signed_content(ext, b"\x00body") == b"312\x00body"


def test_content_orders_keys_by_utf16_units() -> None:
    # U+FF21 sorts after U+10000 in code points but before it in UTF-16 (a surrogate
    # pair starts with 0xD800), which is Java's TreeMap order.
    ext = {"\U00010000": "astral", "\uff21": "bmp"}
    assert signed_content(ext, b"") == b"astralbmp"
    assert sorted(ext) == ["\uff21", "\U00010000"]
    ext2 = {"\ue000": "x", "\U00010000": "y"}
    assert signed_content(ext2, b"") == b"yx"


def test_sign_request_adds_key_token_and_signature() -> None:
    creds = Credentials(access_key="ak_12345", secret_key="sk_12345", security_token="tok")
    request = RemotingCommand.request(105, {"topic": "T"}, b"")
    signed = sign_request(request, creds)
    assert signed.ext_fields[ACCESS_KEY] == "ak_12345"
    assert signed.ext_fields[SECURITY_TOKEN] == "tok"
    assert signature_matches(signed.ext_fields, signed.body, "sk_12345")
    # Re-signing replaces the old signature instead of signing it.
    again = sign_request(signed, creds)
    assert again.ext_fields == signed.ext_fields


def test_missing_or_garbage_signature_does_not_match() -> None:
    assert not signature_matches({"a": "1"}, b"", "secret12")
    assert not signature_matches({"a": "1", SIGNATURE: "é"}, b"", "secret12")


def test_credentials_hide_secret_and_read_env() -> None:
    assert "12345678" not in repr(CREDS)
    env = {"RMQ_ACCESS_KEY": "ak_12345", "RMQ_SECRET_KEY": "sk_12345"}
    assert Credentials.from_env(env) == Credentials(access_key="ak_12345", secret_key="sk_12345")
    assert Credentials.from_env({"RMQ_ACCESS_KEY": "ak_12345"}) is None
    with pytest.raises(ValueError):
        Credentials(access_key="", secret_key="x")
