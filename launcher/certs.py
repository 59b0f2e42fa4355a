"""A local certificate authority for a test cluster (``rmq cluster up --tls``, ``rmq demo --tls``).

Rules:
- ``make_test_pki`` is pure: the clock comes in as ``now``, keys from ``cryptography``'s
  generator (the OS's randomness, as any key must). It returns PEM bytes: a CA, one node
  certificate every server of the cluster uses (server and client auth, so brokers present
  it to NameServers and controllers that verify clients), and one client certificate for
  SDKs and ``rmq admin``. Both leaves name ``localhost`` and each given IP.
- ECDSA P-256 keys, SHA-256 signatures, a validity of ``valid_days`` from an hour before
  ``now`` (clock skew). For tests and demos: production brings its own PKI.
- ``write_test_pki`` writes the files under a directory, keys mode 0600; the only I/O here.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.pem"
NODE_CERT = "node.pem"
NODE_KEY = "node.key"
CLIENT_CERT = "client.pem"
CLIENT_KEY = "client.key"


@attrs.frozen(kw_only=True)
class TestPki:
    """PEM bytes of a test cluster's CA and leaf certificates."""

    ca_cert: bytes
    node_cert: bytes
    node_key: bytes = attrs.field(repr=False)
    client_cert: bytes
    client_key: bytes = attrs.field(repr=False)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "trio-rocketmq test cluster"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _leaf(
    common_name: str,
    *,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    usages: list[x509.ObjectIdentifier],
    ips: Sequence[str],
    not_before: datetime.datetime,
    not_after: datetime.datetime,
) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def make_test_pki(
    *, now: datetime.datetime, ips: Sequence[str] = ("127.0.0.1",), valid_days: int = 30
) -> TestPki:
    """A fresh CA and the node and client certificates it signed (see the rules)."""
    not_before = now - datetime.timedelta(hours=1)
    not_after = now + datetime.timedelta(days=valid_days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("trio-rocketmq test CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    node_cert, node_key = _leaf(
        "trio-rocketmq node",
        usages=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        not_before=not_before,
        not_after=not_after,
        ca_key=ca_key,
        ca_name=ca_name,
        ips=ips,
    )
    client_cert, client_key = _leaf(
        "trio-rocketmq client",
        usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
        not_before=not_before,
        not_after=not_after,
        ca_key=ca_key,
        ca_name=ca_name,
        ips=ips,
    )
    return TestPki(
        ca_cert=ca_cert.public_bytes(serialization.Encoding.PEM),
        node_cert=node_cert,
        node_key=node_key,
        client_cert=client_cert,
        client_key=client_key,
    )


def write_test_pki(directory: Path, pki: TestPki) -> None:
    """Write ``pki``'s files into ``directory`` (keys mode 0600, created so)."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        CA_CERT: (pki.ca_cert, 0o644),
        NODE_CERT: (pki.node_cert, 0o644),
        NODE_KEY: (pki.node_key, 0o600),
        CLIENT_CERT: (pki.client_cert, 0o644),
        CLIENT_KEY: (pki.client_key, 0o600),
    }
    for name, (data, mode) in files.items():
        path = directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)
            os.write(fd, data)
        finally:
            os.close(fd)
