"""The broker's side of cluster trust and TLS, built once from its config (issue 16).

Rules:
- The cluster secret (``clusterSecretFile``) signs what the broker sends NameServers
  (REGISTER_BROKER, UNREGISTER_BROKER) and controllers (``sign``), and answers the HA
  challenge of its master; as a master it challenges its slaves (``ha_config``).
- TLS (``tlsServerCertPath``/``tlsServerKeyPath``): the client port and the HA port
  accept TLS only, and the broker's own connections (NameServers, controllers, its
  master's client and HA ports) connect with TLS, verified against ``tlsServerTrustCertPath``
  and presenting the broker's certificate (for peers that verify clients).
- A bad file stops the broker at start with one line (``SecurityError``), never later.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import attrs

from broker.config import BrokerConfig
from broker.ha.config import HAConfig
from protocol import trust
from protocol.command import RemotingCommand
from protocol.tls import TlsError, TlsFiles, client_context, server_context

log = logging.getLogger(__name__)


class SecurityError(ValueError):
    """The cluster secret or a TLS file is unusable (the message names it)."""


class BrokerSecurity:
    """The secret and the TLS contexts of one broker process."""

    def __init__(self, config: BrokerConfig) -> None:
        self.secret: bytes | None = None
        self.server_tls: ssl.SSLContext | None = None
        self.client_tls: ssl.SSLContext | None = None
        files = TlsFiles(
            cert_file=config.tls_cert_file,
            key_file=config.tls_key_file,
            ca_file=config.tls_ca_file,
            verify_client=config.tls_verify_client,
        )
        try:
            if config.cluster_secret_file:
                self.secret = trust.load_secret_warned(
                    Path(config.cluster_secret_file), log.warning
                )
            if files.enabled or files.ca_file or files.verify_client:
                self.server_tls = server_context(files)
                self.client_tls = client_context(
                    ca_file=files.ca_file, cert_file=files.cert_file, key_file=files.key_file
                )
        except (trust.SecretError, TlsError) as exc:
            raise SecurityError(str(exc)) from None

    def sign(self, request: RemotingCommand) -> RemotingCommand:
        """``request`` signed with the cluster secret (unchanged without one)."""
        if self.secret is None:
            return request
        return trust.sign(request, self.secret, now_ms=trust.wall_ms())

    def ha_config(self, base: HAConfig) -> HAConfig:
        """``base`` with the secret and TLS contexts the HA ends need."""
        return attrs.evolve(
            base,
            cluster_secret=self.secret,
            server_tls=self.server_tls,
            client_tls=self.client_tls,
        )
