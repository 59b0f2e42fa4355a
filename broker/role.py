"""The broker's role as it is now, apart from how the broker was configured.

Rules:
- ``BrokerConfig`` stays exactly what was configured (frozen, never rewritten); what
  changes at runtime with the role lives here, in one mutable value the broker owns:
  master or slave and SYNC or ASYNC (``broker_role``), the id it registers with
  (``broker_id``), whether it is fenced, the id the controller gave it, and the address of
  the master it follows.
- Static roles (no controller): taken from the config at start and never changed.
- Controller mode: starts as a fenced SLAVE (no writes, no NameServer registration) until
  the controller names the role; ``to_master`` and ``to_slave`` are the only transitions,
  and the broker fences itself around each (``Broker.become_master``/``become_slave``).
- ``BrokerIdentity`` is what every part that logs, reads settings and checks the role
  sees of its broker; the parts' own ``BrokerFor...`` Protocols extend it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import attrs

from broker.config import BrokerConfig
from protocol.route import MASTER_ID

if TYPE_CHECKING:
    from broker.security import BrokerSecurity


def _derive_role_flags(role: RoleState, _attribute: object, broker_role: str) -> str:
    """Set ``is_master`` and ``is_sync_master`` from ``broker_role`` (at init and at every
    assignment of it); return the role to store."""
    object.__setattr__(role, "is_master", broker_role != "SLAVE")
    object.__setattr__(role, "is_sync_master", broker_role == "SYNC_MASTER")
    return broker_role


@attrs.define(kw_only=True)
class RoleState:
    """Who this broker is in its group right now."""

    #: ``ASYNC_MASTER``, ``SYNC_MASTER`` or ``SLAVE`` (RocketMQ's ``brokerRole``).
    broker_role: str = attrs.field(on_setattr=_derive_role_flags)
    #: The id this broker registers with at the NameServers (0: master).
    broker_id: int
    #: Controller mode: refuses writes and does not register while the role is changing
    #: or unknown, or when the controller has no master at a newer epoch.
    fenced: bool = False
    #: Controller mode: the id the controller (or the identity file) assigned.
    controller_id: int | None = None
    #: A slave: its master's client address, as the NameServer or controller named it.
    master_addr: str | None = None

    #: Not SLAVE, and SYNC_MASTER: derived from ``broker_role`` whenever it is set, so the
    #: send path reads two slots, not two properties, per message. Never set directly.
    is_master: bool = attrs.field(init=False, eq=False, repr=False)
    is_sync_master: bool = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        _derive_role_flags(self, None, self.broker_role)

    @classmethod
    def from_config(cls, config: BrokerConfig) -> RoleState:
        """The role at start: as configured, or a fenced slave awaiting the controller."""
        if config.controller_mode:
            return cls(broker_role="SLAVE", broker_id=config.broker_id, fenced=True)
        return cls(broker_role=config.broker_role, broker_id=config.broker_id)

    def to_master(self) -> None:
        """Controller mode: master of the group (a SYNC_MASTER, registered as id 0)."""
        self.broker_role = "SYNC_MASTER"
        self.broker_id = MASTER_ID
        self.master_addr = None

    def to_slave(self, master_addr: str | None) -> None:
        """Controller mode: slave under the controller's id, following ``master_addr``."""
        assert self.controller_id is not None, "the controller names the id first"
        self.broker_role = "SLAVE"
        self.broker_id = self.controller_id
        self.master_addr = master_addr


class BrokerIdentity(Protocol):
    """Who a broker is: its name (in logs), its configuration and its role now."""

    @property
    def name(self) -> str: ...
    @property
    def config(self) -> BrokerConfig: ...
    @property
    def role(self) -> RoleState: ...
    @property
    def security(self) -> BrokerSecurity: ...
