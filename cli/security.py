"""Cluster secrets and TLS for the CLI: server flags, local clusters' files, clients.

Rules (README "TLS and cluster secrets"):
- ``rmq cluster up`` (and ``rmq demo``) write a fresh cluster secret to ``D/cluster.secret``
  (mode 0600) and, with ``--tls``, a test CA and certificates under ``D/tls/``
  (launcher/certs.py). Nodes get the *paths*: ``--cluster-secret-file`` and ``--tls-*``
  flags, ``clusterSecretFile``/``tls*`` keys in their config files. The secret itself never
  reaches an argv, a log line or ``cluster.json``.
- A CLI client of a local cluster (``status``, the quorum's leader wait, the demo) trusts
  ``D/tls/ca.pem`` when it exists; other clients follow ``rmq admin --tls``/``--tls-ca``
  or ``$RMQ_TLS``/``$RMQ_TLS_CA_FILE`` (protocol/tls.py).
- A secret or config file that others may read is used with a warning.
"""

from __future__ import annotations

import logging
import secrets
import ssl
from pathlib import Path
from typing import Any

import attrs

from cli.output import fail
from launcher.certs import (
    CA_CERT,
    CLIENT_CERT,
    CLIENT_KEY,
    NODE_CERT,
    NODE_KEY,
    make_test_pki,
    write_test_pki,
)
from protocol import trust
from protocol.tls import TlsError, TlsFiles, client_context, server_context

log = logging.getLogger(__name__)

SECRET_NAME = "cluster.secret"
TLS_DIR = "tls"


def warn_if_others_read(path: Path, what: str) -> None:
    """A one-line warning on the CLI's log when others may read a file holding secrets."""
    trust.warn_if_others_can_read(path, what, log.warning)


def namesrv_security(
    secret_file: Path | None,
    cert: Path | None,
    key: Path | None,
    ca: Path | None,
    verify_client: bool,
) -> dict[str, Any]:
    """``NameServerConfig`` fields for the flags; a bad file is a one-line CLI error."""
    fields: dict[str, Any] = {}
    files = TlsFiles(
        cert_file=str(cert or ""),
        key_file=str(key or ""),
        ca_file=str(ca or ""),
        verify_client=verify_client,
    )
    try:
        if secret_file is not None:
            fields["cluster_secret"] = trust.load_secret_warned(secret_file, log.warning)
        if files.enabled or files.ca_file or files.verify_client:
            fields["tls"] = server_context(files)
    except (trust.SecretError, TlsError) as exc:
        raise fail(str(exc)) from None
    return fields


@attrs.frozen(kw_only=True)
class ClusterSecurity:
    """The secret file and TLS directory of a local cluster (either may be off)."""

    secret_file: Path | None = None
    tls_dir: Path | None = None

    @classmethod
    def create(cls, root: Path, *, secret: bool, tls: bool, now: Any) -> ClusterSecurity:
        """Write a fresh secret and (with ``tls``) a test PKI under ``root``."""
        secret_file = tls_dir = None
        if secret:
            secret_file = root / SECRET_NAME
            trust.write_secret(secret_file, secrets.token_urlsafe(32))
        if tls:
            tls_dir = root / TLS_DIR
            write_test_pki(tls_dir, make_test_pki(now=now))
        return cls(secret_file=secret_file, tls_dir=tls_dir)

    @classmethod
    def of(cls, root: Path) -> ClusterSecurity:
        """What a cluster directory holds (for the commands that talk to its nodes)."""
        secret_file = root / SECRET_NAME
        tls_dir = root / TLS_DIR
        return cls(
            secret_file=secret_file if secret_file.is_file() else None,
            tls_dir=tls_dir if (tls_dir / CA_CERT).is_file() else None,
        )

    def _tls(self, name: str) -> str:
        assert self.tls_dir is not None
        return str(self.tls_dir / name)

    def namesrv_args(self) -> list[str]:
        args = []
        if self.secret_file is not None:
            args += ["--cluster-secret-file", str(self.secret_file)]
        if self.tls_dir is not None:
            args += ["--tls-cert", self._tls(NODE_CERT), "--tls-key", self._tls(NODE_KEY)]
            args += ["--tls-ca", self._tls(CA_CERT)]
        return args

    def broker_settings(self) -> tuple[tuple[str, Any], ...]:
        """broker.conf keys (paths only)."""
        settings: list[tuple[str, Any]] = []
        if self.secret_file is not None:
            settings.append(("clusterSecretFile", str(self.secret_file)))
        if self.tls_dir is not None:
            settings += [
                ("tlsServerCertPath", self._tls(NODE_CERT)),
                ("tlsServerKeyPath", self._tls(NODE_KEY)),
                ("tlsServerTrustCertPath", self._tls(CA_CERT)),
            ]
        return tuple(settings)

    def proxy_args(self) -> list[str]:
        """``rmq proxy`` flags: a TLS gRPC port and TLS to the cluster (paths only)."""
        if self.tls_dir is None:
            return []
        return [
            "--tls-cert", self._tls(NODE_CERT), "--tls-key", self._tls(NODE_KEY),
            "--tls-ca", self._tls(CA_CERT),
        ]  # fmt: skip

    def controller_fields(self) -> dict[str, Any]:
        """``ControllerConfig`` fields (paths only)."""
        fields: dict[str, Any] = {}
        if self.secret_file is not None:
            fields["cluster_secret_file"] = str(self.secret_file)
        if self.tls_dir is not None:
            fields["tls_cert_file"] = self._tls(NODE_CERT)
            fields["tls_key_file"] = self._tls(NODE_KEY)
            fields["tls_ca_file"] = self._tls(CA_CERT)
        return fields

    def client_tls(self) -> ssl.SSLContext | None:
        """The context CLI clients of this cluster connect with (None: plain)."""
        if self.tls_dir is None:
            return None
        return client_context(
            ca_file=self._tls(CA_CERT),
            cert_file=self._tls(CLIENT_CERT),
            key_file=self._tls(CLIENT_KEY),
        )

    def client_env(self) -> dict[str, str]:
        """``$RMQ_TLS*`` for a child process (an SDK or ``rmq admin``) of this cluster."""
        if self.tls_dir is None:
            return {}
        return {
            "RMQ_TLS": "1",
            "RMQ_TLS_CA_FILE": self._tls(CA_CERT),
            "RMQ_TLS_CERT_FILE": self._tls(CLIENT_CERT),
            "RMQ_TLS_KEY_FILE": self._tls(CLIENT_KEY),
        }
