"""ACL 1.0 request signatures, as RocketMQ 4.x (AclClientRPCHook, AclUtils) and ali-ons sign.

Rules:
- The signed content is the value of every ext field except ``Signature``, in the order of
  the keys as Java's ``TreeMap`` and JavaScript's ``Array.sort`` order strings (UTF-16 code
  units), concatenated and encoded as UTF-8, then the body bytes.
- ``Signature`` = base64(HMAC-SHA1(secretKey as UTF-8, content)).
- A client adds ``AccessKey`` (and ``SecurityToken`` when it has one) before it computes the
  content, so both are signed; so is anything else it puts in the ext fields (ali-ons adds
  ``OnsChannel``). A verifier therefore signs whatever ext fields arrived, minus Signature.
- Only the values are signed, not the keys: a request whose values concatenate the same
  way (a field added with an empty value, a boundary moved between neighbours) carries
  the same signature. That is RocketMQ's scheme, kept for compatibility; the checks that
  follow read each field by name, and a signature carries no time, so run TLS where
  requests could be captured.
- Signatures are compared in constant time (``hmac.compare_digest``).
- Pure: no I/O; ``Credentials.from_env`` reads the mapping it is given.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping

import attrs

from protocol.command import RemotingCommand

ACCESS_KEY = "AccessKey"
SIGNATURE = "Signature"
SECURITY_TOKEN = "SecurityToken"

#: Environment variables the CLI and the SDK's ``Credentials.from_env`` read.
ENV_ACCESS_KEY = "RMQ_ACCESS_KEY"
ENV_SECRET_KEY = "RMQ_SECRET_KEY"
ENV_SECURITY_TOKEN = "RMQ_SECURITY_TOKEN"


@attrs.frozen(kw_only=True)
class Credentials:
    """An ACL account as a client holds it. The secret never shows in ``repr``."""

    access_key: str = attrs.field(validator=attrs.validators.min_len(1))
    secret_key: str = attrs.field(repr=False, validator=attrs.validators.min_len(1))
    security_token: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Credentials | None:
        """Credentials from RMQ_ACCESS_KEY / RMQ_SECRET_KEY (None when either is unset)."""
        access_key = environ.get(ENV_ACCESS_KEY, "")
        secret_key = environ.get(ENV_SECRET_KEY, "")
        if not access_key or not secret_key:
            return None
        return cls(
            access_key=access_key,
            secret_key=secret_key,
            security_token=environ.get(ENV_SECURITY_TOKEN) or None,
        )


def _utf16_order(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def signed_content(ext_fields: Mapping[str, str], body: bytes) -> bytes:
    """What the signature covers: sorted ext field values (minus Signature), then the body."""
    keys = sorted(ext_fields)
    if not "".join(keys).isascii():
        # Code point order and UTF-16 order differ only past U+FFFF; Java's is UTF-16.
        keys.sort(key=_utf16_order)
    text = "".join([ext_fields[key] for key in keys if key != SIGNATURE])
    return text.encode("utf-8", "surrogatepass") + body


def signature(secret_key: str, content: bytes) -> str:
    """base64(HMAC-SHA1(secret_key, content)), AclUtils.calSignature's result."""
    # hmac.digest: OpenSSL's one-shot HMAC, a sixth of hmac.new's cost per request.
    digest = hmac.digest(secret_key.encode("utf-8"), content, "sha1")
    return base64.b64encode(digest).decode("ascii")


def signed_ext_fields(
    ext_fields: Mapping[str, str], body: bytes, credentials: Credentials
) -> dict[str, str]:
    """``ext_fields`` plus AccessKey, SecurityToken (if any) and the Signature over them."""
    ext = dict(ext_fields)
    ext.pop(SIGNATURE, None)
    ext[ACCESS_KEY] = credentials.access_key
    if credentials.security_token:
        ext[SECURITY_TOKEN] = credentials.security_token
    ext[SIGNATURE] = signature(credentials.secret_key, signed_content(ext, body))
    return ext


def sign_request(request: RemotingCommand, credentials: Credentials) -> RemotingCommand:
    """``request`` carrying its signature (opaque and flag are not signed: the transport
    may set them afterwards)."""
    return attrs.evolve(
        request, ext_fields=signed_ext_fields(request.ext_fields, request.body, credentials)
    )


def signature_matches(ext_fields: Mapping[str, str], body: bytes, secret_key: str) -> bool:
    """Whether the request's Signature is the one ``secret_key`` gives its content."""
    claimed = ext_fields.get(SIGNATURE)
    if not claimed:
        return False
    expected = signature(secret_key, signed_content(ext_fields, body))
    return hmac.compare_digest(expected.encode("ascii"), claimed.encode("utf-8", "replace"))


__all__ = [
    "ACCESS_KEY",
    "ENV_ACCESS_KEY",
    "ENV_SECRET_KEY",
    "SECURITY_TOKEN",
    "SIGNATURE",
    "Credentials",
    "sign_request",
    "signature",
    "signature_matches",
    "signed_content",
    "signed_ext_fields",
]
