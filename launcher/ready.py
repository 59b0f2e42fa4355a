"""The ready line of each server kind: how a server prints it, how everyone else reads it.

Rules:
- A server prints exactly one ready line on stdout once every port it serves is bound,
  worded as RocketMQ's so its users recognise it, with the bound addresses (``--port 0``
  works): ``The Name Server boot success. address=127.0.0.1:9876``,
  ``The broker[broker-a, 127.0.0.1:10911] boot success. role=SYNC_MASTER ha=... store=...``,
  ``The controller[n0, 127.0.0.1:9878] boot success. raft=... peers=...``,
  ``The dashboard boot success. url=http://127.0.0.1:8080/``.
- The formatters here are the only place that spells a ready line and the patterns the
  only place that reads one: ``rmq`` (cli/) prints with the first, ``rmq cluster``, the
  chaos harness, benchmarks and tests wait with the second.
- Every pattern has ``host`` and ``port`` groups (the address clients use); a broker's
  also ``name``, ``role`` and ``ha`` (a master's HA address), a controller's ``name``
  and ``raft``.
- Pure: strings in, strings or values out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import attrs

#: The server kinds, as ``cluster.json`` records them (``Node.kind``).
NAMESRV = "namesrv"
BROKER = "broker"
CONTROLLER = "controller"
DASHBOARD = "dashboard"

NAMESRV_READY = re.compile(
    r"The Name Server boot success\. address=(?P<host>[0-9.]+):(?P<port>[0-9]+)"
)
BROKER_READY = re.compile(
    r"The broker\[(?P<name>[^,\]]+), (?P<host>[0-9.]+):(?P<port>[0-9]+)\] boot success\. "
    r"role=(?P<role>\S+)(?: ha=(?P<ha>\S+))?"
)
CONTROLLER_READY = re.compile(
    r"The controller\[(?P<name>[^,\]]+), (?P<host>[0-9.]+):(?P<port>[0-9]+)\] boot success\."
    r"(?: raft=(?P<raft>\S+))?"
)
#: ``rmq dashboard``'s line (``dashboard/server.py`` READY): the page's URL.
DASHBOARD_READY = re.compile(
    r"The dashboard boot success\. url=http://(?P<host>[0-9.]+):(?P<port>[0-9]+)/"
)
#: The line a server with ``--metrics-port`` prints after its ready line.
METRICS_LINE = re.compile(r"^metrics: http://(?P<address>[0-9.]+:[0-9]+)/metrics$", re.M)
READY_BY_KIND: Mapping[str, re.Pattern[str]] = {
    NAMESRV: NAMESRV_READY,
    BROKER: BROKER_READY,
    CONTROLLER: CONTROLLER_READY,
    DASHBOARD: DASHBOARD_READY,
}


def namesrv_ready_line(address: str) -> str:
    return f"The Name Server boot success. address={address}"


def broker_ready_line(
    *, broker_name: str, address: str, role: str, ha_address: str | None, store_dir: object
) -> str:
    """``role``: the brokerRole, or ``controller-assigned`` in controller mode."""
    ha = f" ha={ha_address}" if ha_address else ""
    return f"The broker[{broker_name}, {address}] boot success. role={role}{ha} store={store_dir}"


def controller_ready_line(
    *, node_id: str, address: str, raft_address: str, peers: Mapping[str, str]
) -> str:
    """``peers``: node id -> remoting address of every node of the quorum."""
    listed = ";".join(f"{node}:{addr}" for node, addr in peers.items())
    return f"The controller[{node_id}, {address}] boot success. raft={raft_address} peers={listed}"


@attrs.frozen(kw_only=True)
class Ready:
    """What one ready line says."""

    kind: str
    host: str
    port: int
    #: The broker group or controller node id (None for a NameServer).
    name: str | None = None
    #: A broker's role as printed (``SYNC_MASTER``, ``controller-assigned``, ...).
    role: str | None = None
    #: A master's HA address.
    ha_address: str | None = None
    #: A controller's Raft address.
    raft_address: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def from_match(cls, kind: str, match: re.Match[str]) -> Ready:
        groups = match.groupdict()
        return cls(
            kind=kind,
            host=groups["host"],
            port=int(groups["port"]),
            name=groups.get("name"),
            role=groups.get("role"),
            ha_address=groups.get("ha"),
            raft_address=groups.get("raft"),
        )


def parse_ready(kind: str, text: str) -> Ready | None:
    """The first ready line of a ``kind`` server in ``text`` (None: not printed yet)."""
    match = READY_BY_KIND[kind].search(text)
    return Ready.from_match(kind, match) if match is not None else None


def parse_all_ready(kind: str, text: str) -> list[Ready]:
    """Every ready line of a ``kind`` server in ``text``, in order (one per start)."""
    return [Ready.from_match(kind, m) for m in READY_BY_KIND[kind].finditer(text)]


def parse_metrics_address(text: str) -> str | None:
    """The ``host:port`` of the last metrics line in ``text`` (None: none printed)."""
    found = METRICS_LINE.findall(text)
    return found[-1] if found else None
