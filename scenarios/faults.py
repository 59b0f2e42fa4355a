"""Faults: kill and restart, pause and resume, a TCP fault proxy, a torn CommitLog tail,
and a fault sequence.

Rules:
- A fault kind is a frozen value with ``inject`` and ``heal``; it acts on a named node
  through ``NodeControl`` (the harness), so kinds are data a scenario lists and a seed
  replays. ``name`` is what the history's ``fault <name> start|end`` lines say.
- Process faults signal only a pid that is still the recorded process (``is_alive`` of
  ``launcher/pids.py`` checks start time and command line): a recycled pid is never
  hit.
- ``FaultProxy`` is toxiproxy on Trio: it listens on 127.0.0.1 and forwards to one
  upstream ``host:port``. Toxics: ``drop`` (a black hole, as iptables DROP looks above
  TCP: connections stay open and nothing moves either way — bytes are held, not thrown
  away, so a stream never loses its framing; a new connection opens but its upstream
  is not dialled; when healed, what was held flows on, as TCP retransmits it),
  ``refuse`` (open connections are reset, new ones reset at once), ``latency`` (+ jitter,
  per chunk, order kept), ``loss`` (each chunk is held back by TCP-like retransmission
  delays with probability p: late bytes, never missing ones). ``clear`` heals everything.
  Memory is bounded: one chunk in flight per direction and connection.
- ``ProxyGroup`` switches every proxy on one node's links at once (a broker has one per
  controller when its controller links are proxied).
- Sequences and probes act through the harness too: ``ExpandThenKill`` (apache/rocketmq
  #5663) resolves its nodes step by step from the controller's view and records each
  step; ``Pause(probe_writes=N)`` writes straight to the resumed node;
  ``KillRestart(probe_new_master=True)`` compares the old and the new master's metadata
  (``metadata_kept``, pure). Heal of a sequence: resume and restart whatever is down.
- ``LinkCut`` acts on the real links of separate hosts (``launcher/netns.py``; the
  scenario sets ``netns``): packets a node sends (``out``), receives (``in``) or both are
  dropped, to and from every peer or one set of them (``controllers``, its ``group``,
  ``clients``, ``node:NAME``), always (a partition: no FIN, no RST, as a cut cable) or
  with a probability (loss; TCP retransmits). Its heal lifts exactly its own drops.
  ``LinkDelay`` holds every frame of a node's link for a latency plus jitter.
- ``PowerLoss`` cuts the power of a broker (or of every broker of a group at once): SIGKILL,
  then its store (a powerfs mount, ``Scenario.power_store``) loses every write no fsync
  covered; heal: power on (mount what survived) and start it again (a group's brokers
  together). What each node lost is a ``step`` line of the history.
- A torn tail is written on a *stopped* node only: the first bytes of a record (size,
  magic, then less than that size) right after the last whole record of the newest
  CommitLog segment, as a crash mid-write leaves it. ``corrupt`` flips a byte of the last
  whole record instead (a disk fault; recovery must refuse it or cut it, never serve it).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import os
import random
import socket
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import attrs
import trio

from launcher.netns import IN, OUT, Drop
from protocol.message import BLANK_MAGIC, MAGIC_V1, MAGIC_V2, MIN_RECORD_BYTES

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
_CHUNK_BYTES = 64 * 1024
#: TCP's first retransmission timeout on Linux is 200 ms; each repeat doubles it.
_RTO_S = 0.2


class NodeControl(Protocol):
    """What a fault needs from the harness."""

    async def kill(self, node: str) -> None: ...
    async def restart(self, node: str) -> None: ...
    def pause(self, node: str) -> None: ...
    def resume(self, node: str) -> None: ...
    def store_dir(self, node: str) -> Path: ...
    def proxy(self, node: str) -> ProxyGroup: ...
    @property
    def rng(self) -> random.Random: ...

    # Power (a powerfs store only).
    async def power_off(self, node: str) -> dict[str, object]: ...
    async def power_on(self, node: str) -> None: ...
    def group_nodes(self, group: str) -> list[str]: ...

    # Link faults (separate hosts only).
    def peer_addresses(self, node: str, peers: str) -> list[str] | None: ...
    def drop_packets(self, key: str, node: str, drops: list[Drop]) -> None: ...
    def heal_packets(self, key: str, node: str) -> None: ...
    async def delay_link(self, key: str, node: str, latency_s: float, jitter_s: float) -> None: ...
    async def heal_delay(self, key: str, node: str) -> None: ...

    # For sequences and probes (controller mode).
    async def resolve(self, target: str) -> str: ...
    async def in_sync_nodes(self, group: str) -> tuple[str, list[str]] | None:
        """(master node, in-sync slave nodes) as the controller says now; None: unknown."""
        ...

    def log_size(self, node: str) -> int: ...
    async def wait_for_log(self, node: str, pattern: str, since: int, timeout_s: float) -> bool: ...
    def note(self, step: str, **extra: object) -> None:
        """Record one step of a fault in the history (a ``step`` line)."""
        ...

    async def probe_writes(self, node: str, count: int) -> None: ...
    async def metadata_of(self, node: str) -> BrokerMetadata | None: ...
    async def probe_new_master(self, old_master: str, before: BrokerMetadata | None) -> None: ...
    async def heal_all(self) -> None:
        """Resume every paused node, restart every stopped one."""
        ...


@attrs.frozen(kw_only=True)
class BrokerMetadata:
    """What one broker holds of the workload's topic and consumer group."""

    address: str
    #: The topic's write queue count there; None: the broker has no such topic.
    write_queues: int | None
    #: Queue id -> the group's committed offset there.
    offsets: Mapping[int, int]


def metadata_kept(
    before: BrokerMetadata | None, after: BrokerMetadata, *, write_queues: int
) -> tuple[bool, str]:
    """Whether a new master has the topic (with the queues it was created with) and the
    group's offsets the old master had (every queue with an offset > 0 there has one > 0
    here); and a one-line account (how far each offset is behind the old master's)."""
    problems: list[str] = []
    if after.write_queues != write_queues:
        problems.append(f"topic has {after.write_queues} write queues, not {write_queues}")
    behind = {}
    if before is not None:
        for qid, offset in sorted(before.offsets.items()):
            if offset <= 0:
                continue
            now = after.offsets.get(qid, 0)
            if now <= 0:
                problems.append(f"queue {qid} offset missing (was {offset})")
            behind[qid] = offset - now
    worst = max(behind.values(), default=0)
    detail = f"queues={after.write_queues} offsets={len(after.offsets)} max_behind={worst}" + (
        f" problems: {'; '.join(problems)}" if problems else ""
    )
    return not problems, detail


# --- fault kinds -------------------------------------------------------------------------


@attrs.frozen
class KillRestart:
    """SIGKILL the node; heal: optionally tear its CommitLog tail, then start it again.

    ``probe_new_master``: after the kill, wait for the group's new master and check that
    the topic and the consumer offsets are there (itboon/rocketmq-helm#33,
    apache/rocketmq#8509); the verdict is a ``probe`` line.
    """

    tear_tail: bool = False
    probe_new_master: bool = False

    @property
    def name(self) -> str:
        return "kill-torn-tail" if self.tear_tail else "kill"

    async def inject(self, ctl: NodeControl, node: str) -> None:
        before = await ctl.metadata_of(node) if self.probe_new_master else None
        await ctl.kill(node)
        if self.probe_new_master:
            await ctl.probe_new_master(node, before)

    async def heal(self, ctl: NodeControl, node: str) -> None:
        if self.tear_tail:
            damage = tear_commitlog_tail(ctl.store_dir(node), ctl.rng)
            log.info("%s: %s", node, damage)
        await ctl.restart(node)


@attrs.frozen
class Pause:
    """SIGSTOP the node (it holds its connections and answers nothing); heal: SIGCONT.

    ``probe_writes``: right after SIGCONT, send that many messages straight to the resumed
    node (a producer with a stale route): a deposed master must not ack them.
    """

    name: str = "pause"
    probe_writes: int = 0

    async def inject(self, ctl: NodeControl, node: str) -> None:
        ctl.pause(node)

    async def heal(self, ctl: NodeControl, node: str) -> None:
        ctl.resume(node)
        if self.probe_writes:
            await ctl.probe_writes(node, self.probe_writes)


@attrs.frozen
class ExpandThenKill:
    """apache/rocketmq#5663 as a fault sequence on one broker group (target ``group:NAME``).

    1. Kill an in-sync slave S; wait until the controller's SyncStateSet has dropped it.
    2. Restart S. The moment it took its role from the controller (it then reconnects to
       the master, catches up, and the master proposes the expansion {M, T} -> {M, S, T}),
       SIGSTOP the controller leader, so the expansion is not acknowledged.
    3. ``kill_after_s`` later, kill -9 the master M while the expansion is in flight.
    Heal: resume the controller, restart M. A new master is elected by the other
    controllers meanwhile; every write acked before must be on it.
    """

    kill_after_s: float = 1.0
    shrink_timeout_s: float = 20.0
    name: str = "expand-then-kill"

    async def inject(self, ctl: NodeControl, group: str) -> None:
        nodes = await ctl.in_sync_nodes(group)
        if nodes is None or not nodes[1]:
            ctl.note("skipped: the controller names no in-sync slave", group=group)
            return
        master, in_sync = nodes
        slave = ctl.rng.choice(sorted(in_sync))
        await ctl.kill(slave)
        ctl.note("killed slave", node=slave)
        with trio.move_on_after(self.shrink_timeout_s):
            while True:
                now = await ctl.in_sync_nodes(group)
                if now is not None and slave not in now[1]:
                    break
                await trio.sleep(0.2)
        ctl.note("SyncStateSet shrank", node=slave)
        leader = await ctl.resolve("controller-leader")
        since = ctl.log_size(slave)
        await ctl.restart(slave)
        took_role = await ctl.wait_for_log(slave, "became slave of", since, 15.0)
        ctl.pause(leader)
        ctl.note("paused controller leader", node=leader, slave_took_role=took_role)
        await trio.sleep(self.kill_after_s)
        await ctl.kill(master)
        ctl.note("killed master", node=master)

    async def heal(self, ctl: NodeControl, group: str) -> None:
        await ctl.heal_all()


class Cut(enum.Enum):
    DROP = "drop"
    REFUSE = "refuse"


@attrs.frozen
class Partition:
    """Cut the node's proxied links (drop: black hole; refuse: resets)."""

    cut: Cut = Cut.DROP

    @property
    def name(self) -> str:
        return f"partition-{self.cut.value}"

    async def inject(self, ctl: NodeControl, node: str) -> None:
        ctl.proxy(node).set(Toxics(cut=self.cut))

    async def heal(self, ctl: NodeControl, node: str) -> None:
        ctl.proxy(node).clear()


@attrs.frozen
class Delay:
    """Add latency (+ uniform jitter) to every chunk through the node's proxy."""

    latency_s: float = 0.5
    jitter_s: float = 0.1
    name: str = "delay"

    async def inject(self, ctl: NodeControl, node: str) -> None:
        ctl.proxy(node).set(Toxics(latency_s=self.latency_s, jitter_s=self.jitter_s))

    async def heal(self, ctl: NodeControl, node: str) -> None:
        ctl.proxy(node).clear()


@attrs.frozen
class Loss:
    """Hold back chunks with probability ``probability`` by TCP retransmission delays."""

    probability: float = 0.1
    name: str = "loss"

    async def inject(self, ctl: NodeControl, node: str) -> None:
        ctl.proxy(node).set(Toxics(loss=self.probability))

    async def heal(self, ctl: NodeControl, node: str) -> None:
        ctl.proxy(node).clear()


DIRECTIONS = ("both", OUT, IN)


def link_drops(
    node: str, direction: str, peers: list[str] | None, probability: float
) -> list[Drop]:
    """The drops of a link fault on ``node``: each direction it names, to or from each
    peer address (``None``: every peer)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, not {direction!r}")
    ways = (OUT, IN) if direction == "both" else (direction,)
    targets: list[str | None] = list(peers) if peers is not None else [None]
    return [
        Drop(node=node, direction=way, peer=peer, probability=probability)
        for way in ways
        for peer in targets
    ]


@attrs.frozen
class LinkCut:
    """Drop the target node's packets on its own link (separate hosts only): to and from
    ``peers``, in ``direction``, each with ``probability`` (1: a partition)."""

    peers: str = "all"
    direction: str = attrs.field(default="both", validator=attrs.validators.in_(DIRECTIONS))
    probability: float = 1.0

    @property
    def name(self) -> str:
        what = "netsplit" if self.probability >= 1.0 else f"netloss{self.probability * 100:g}"
        way = "" if self.direction == "both" else f"-{self.direction}"
        return f"{what}-{self.peers.replace(':', '-')}{way}"

    async def inject(self, ctl: NodeControl, node: str) -> None:
        peers = ctl.peer_addresses(node, self.peers)
        ctl.drop_packets(self.name, node, link_drops(node, self.direction, peers, self.probability))

    async def heal(self, ctl: NodeControl, node: str) -> None:
        ctl.heal_packets(self.name, node)


@attrs.frozen
class LinkDelay:
    """Delay every frame to and from the target node by ``latency_s`` plus a uniform
    ``0..jitter_s`` on its own link (separate hosts only; a userspace wire,
    ``scenarios/netdelay.py``, since this kernel has no netem)."""

    latency_s: float = 0.2
    jitter_s: float = 0.05

    @property
    def name(self) -> str:
        return f"netdelay{self.latency_s * 1000:g}ms"

    async def inject(self, ctl: NodeControl, node: str) -> None:
        await ctl.delay_link(self.name, node, self.latency_s, self.jitter_s)

    async def heal(self, ctl: NodeControl, node: str) -> None:
        await ctl.heal_delay(self.name, node)


@attrs.frozen
class PowerLoss:
    """Power off the target broker (``scope`` node) or every broker of the target group
    (``scope`` group, target ``group:NAME``): what no fsync covered is lost. Heal: power
    on and start again."""

    scope: str = attrs.field(default="node", validator=attrs.validators.in_(("node", "group")))

    @property
    def name(self) -> str:
        return "power-loss" if self.scope == "node" else "group-power-loss"

    def _nodes(self, ctl: NodeControl, target: str) -> list[str]:
        return ctl.group_nodes(target) if self.scope == "group" else [target]

    async def inject(self, ctl: NodeControl, target: str) -> None:
        nodes = self._nodes(ctl, target)
        async with trio.open_nursery() as nursery:  # one power cut: all at once
            for node in nodes:
                nursery.start_soon(ctl.kill, node)
        for node in nodes:
            lost = await ctl.power_off(node)
            ctl.note("power off", node=node, unsynced_bytes_lost=lost.get("bytes"))

    async def heal(self, ctl: NodeControl, target: str) -> None:
        nodes = self._nodes(ctl, target)
        for node in nodes:
            await ctl.power_on(node)
        async with trio.open_nursery() as nursery:
            for node in nodes:
                nursery.start_soon(ctl.restart, node)


FaultKind = (
    KillRestart
    | Pause
    | Partition
    | Delay
    | Loss
    | ExpandThenKill
    | LinkCut
    | LinkDelay
    | PowerLoss
)


# --- the proxy ---------------------------------------------------------------------------


def _probability(_inst: object, _attr: object, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"loss must be a probability, not {value}")


@attrs.frozen(kw_only=True)
class Toxics:
    """What the proxy does to traffic now (the default passes it untouched)."""

    cut: Cut | None = None
    latency_s: float = 0.0
    jitter_s: float = 0.0
    loss: float = attrs.field(default=0.0, validator=_probability)

    def __attrs_post_init__(self) -> None:
        assert self.latency_s >= 0 and self.jitter_s >= 0, self

    def delay_s(self, rng: random.Random) -> float:
        """Extra delay of one chunk: latency, jitter, and the retransmissions of a loss."""
        delay = self.latency_s + (rng.uniform(0, self.jitter_s) if self.jitter_s else 0.0)
        rto = _RTO_S
        while self.loss and rng.random() < self.loss and rto <= 3.2:
            delay += rto
            rto *= 2
        return delay


@attrs.define
class ProxyStats:
    connections: int = 0
    refused: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    #: Chunks that waited in a black hole.
    held_chunks: int = 0


class FaultProxy:
    """A TCP proxy on 127.0.0.1 in front of ``upstream``, with switchable toxics."""

    def __init__(self, name: str, upstream: str, rng: random.Random, *, timeout_s: float = 3.0):
        host, _, port = upstream.rpartition(":")
        if host != LOOPBACK:
            raise ValueError(f"the fault proxy only fronts {LOOPBACK}, not {upstream}")
        self.name = name
        self.upstream = (host, int(port))
        self.timeout_s = timeout_s
        self.port = 0
        self.stats = ProxyStats()
        self._rng = rng
        self._toxics = Toxics()
        self._changed = trio.Event()
        self._conns: set[trio.SocketStream] = set()

    @property
    def address(self) -> str:
        assert self.port, f"proxy {self.name} is not serving"
        return f"{LOOPBACK}:{self.port}"

    @property
    def toxics(self) -> Toxics:
        return self._toxics

    def set(self, toxics: Toxics) -> None:
        self._toxics = toxics
        if toxics.cut is Cut.REFUSE:
            for stream in list(self._conns):
                _reset(stream)
        self._changed.set()
        self._changed = trio.Event()
        log.info("proxy %s -> %s:%d: %s", self.name, *self.upstream, toxics)

    def clear(self) -> None:
        self.set(Toxics())

    async def serve(
        self, *, port: int = 0, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=LOOPBACK)
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        self.stats.connections += 1
        if not await self._pass_black_hole():
            self.stats.refused += 1
            _reset(client)
            return
        try:
            with trio.fail_after(self.timeout_s):
                upstream = await trio.open_tcp_stream(*self.upstream)
        except (OSError, trio.TooSlowError):
            _reset(client)
            return
        self._conns.update((client, upstream))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pipe, client, upstream, True, nursery.cancel_scope)
                nursery.start_soon(self._pipe, upstream, client, False, nursery.cancel_scope)
        finally:
            self._conns.difference_update((client, upstream))
            # Synchronous closes: a checkpoint here would let a cancellation skip the rest.
            for stream in (client, upstream):
                with contextlib.suppress(OSError):
                    stream.socket.close()

    async def _pipe(
        self,
        source: trio.SocketStream,
        sink: trio.SocketStream,
        up: bool,
        scope: trio.CancelScope,
    ) -> None:
        """Copy one direction, applying the toxics in force when each chunk arrived."""
        try:
            while chunk := await source.receive_some(_CHUNK_BYTES):
                if self._toxics.cut is Cut.DROP:
                    self.stats.held_chunks += 1
                if not await self._pass_black_hole():
                    break
                delay = self._toxics.delay_s(self._rng)
                if delay:
                    await trio.sleep(delay)
                await sink.send_all(chunk)
                if up:
                    self.stats.bytes_up += len(chunk)
                else:
                    self.stats.bytes_down += len(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            scope.cancel()

    async def _pass_black_hole(self) -> bool:
        """Wait while the link is a black hole; False when it is (or became) refused."""
        while self._toxics.cut is Cut.DROP:
            await self._changed.wait()
        return self._toxics.cut is not Cut.REFUSE


class ProxyGroup:
    """Every fault proxy on one node's links (NameServer, controllers), switched together."""

    def __init__(self, proxies: list[FaultProxy]) -> None:
        self.proxies = proxies

    def set(self, toxics: Toxics) -> None:
        for proxy in self.proxies:
            proxy.set(toxics)

    def clear(self) -> None:
        self.set(Toxics())


def _reset(stream: trio.SocketStream) -> None:
    """Close with RST (SO_LINGER 0), as a refused or reset connection looks to its peer."""
    with contextlib.suppress(OSError):
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        stream.socket.close()


# --- CommitLog tail damage ----------------------------------------------------------------


@attrs.frozen(kw_only=True)
class TailDamage:
    segment: Path
    #: File offset of the end of the last whole record (where a torn record starts).
    data_end: int
    offset: int
    length: int
    how: str

    def __str__(self) -> str:
        return (
            f"{self.how}: {self.length} bytes at {self.segment.name}+{self.offset} "
            f"(last whole record ends at +{self.data_end})"
        )


def _record_ends(fd: int, size: int) -> tuple[int, int]:
    """(start of the last whole record, end of it) in a segment; (0, 0) when empty."""
    pos = 0
    last = (0, 0)
    while pos + 8 <= size:
        header = os.pread(fd, 8, pos)
        total, magic = struct.unpack(">ii", header)
        if total == 0 and magic == 0:
            break
        if magic == BLANK_MAGIC:
            break
        if magic not in (MAGIC_V1, MAGIC_V2) or total < MIN_RECORD_BYTES or pos + total > size:
            raise ValueError(f"no record at +{pos} (size {total}, magic {magic:#x})")
        last = (pos, pos + total)
        pos += total
    return last


def tear_commitlog_tail(store_dir: Path, rng: random.Random, *, how: str = "torn") -> TailDamage:
    """Damage the newest CommitLog segment under ``store_dir`` (the node must be stopped).

    ``torn``: a partial record after the last whole one; ``corrupt``: one byte of the last
    whole record's body changed.
    """
    directory = store_dir / "commitlog"
    segments = sorted(p for p in directory.iterdir() if p.name.isdigit() and len(p.name) == 20)
    if not segments:
        raise FileNotFoundError(errno.ENOENT, "no CommitLog segment", str(directory))
    segment = segments[-1]
    fd = os.open(segment, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        start, end = _record_ends(fd, size)
        if how == "torn":
            planned = rng.randrange(MIN_RECORD_BYTES, 512)
            length = rng.randrange(8, planned)
            data = struct.pack(">ii", planned, MAGIC_V1) + rng.randbytes(length - 8)
            offset = end
        elif how == "corrupt":
            if end == 0:
                raise ValueError(f"{segment} holds no record to corrupt")
            offset = rng.randrange(start + 8, end)
            (old,) = os.pread(fd, 1, offset)
            data = bytes([old ^ (1 << rng.randrange(8))])
            length = 1
        else:
            raise ValueError(f"unknown tail damage {how!r}: torn or corrupt")
        if offset + len(data) > size:
            raise ValueError(f"{segment} has no room after +{offset} for {len(data)} bytes")
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    return TailDamage(segment=segment, data_end=end, offset=offset, length=length, how=how)
