"""netdelay: a userspace wire that delays every frame between two interfaces.

``python -m scenarios.netdelay IF_A IF_B --latency-ms L --jitter-ms J`` (root) copies
every Ethernet frame that arrives on IF_A out of IF_B and back, each one held for L ms
plus a uniform 0..J ms, until SIGTERM; it prints ``netdelay ready`` once both raw sockets
are bound.

Why it exists: this kernel has no netem, so added latency and jitter on a real link are
made here. The harness (``LocalCluster.delay_link``) takes a node's veth end off the
bridge and puts this wire between it and a new bridge port; the heal stops the wire and
puts the end back. TCP connections live through both moves (a frame or two in flight is
lost and retransmitted).

Rules:
- Frames, not bytes: what the node sends and receives is delayed as a slow link delays it
  (TCP's own timers see it; a jitter larger than the gap between frames reorders them,
  as netem's does).
- Frames this process sends are seen again by its own sockets as outgoing: skipped.
- Memory is bounded: at most ``MAX_HELD`` frames wait per direction; more are dropped, as
  a full queue drops them.
- Linux only (AF_PACKET), root only.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import random
import select
import signal
import socket
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
MAX_FRAME = 65536
MAX_HELD = 10_000


class Stop(Exception):
    """SIGTERM."""


def open_raw(interface: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((interface, 0))
    sock.setblocking(False)
    return sock


def due_s(now_s: float, latency_s: float, jitter_s: float, rng: random.Random) -> float:
    """When a frame that arrived at ``now_s`` leaves."""
    return now_s + latency_s + (rng.uniform(0.0, jitter_s) if jitter_s else 0.0)


def serve(a: str, b: str, latency_s: float, jitter_s: float, seed: int) -> None:
    rng = random.Random(seed)
    socks = {a: open_raw(a), b: open_raw(b)}
    other = {a: socks[b], b: socks[a]}
    held: list[tuple[float, int, str, bytes]] = []  # (due, seq, arrived on, frame)
    seq = 0
    print("netdelay ready", flush=True)
    by_fd = {s.fileno(): name for name, s in socks.items()}
    while True:
        timeout = max(0.0, held[0][0] - time.monotonic()) if held else 1.0
        readable, _, _ = select.select(list(socks.values()), [], [], timeout)
        now = time.monotonic()
        for sock in readable:
            name = by_fd[sock.fileno()]
            while True:
                try:
                    frame, address = sock.recvfrom(MAX_FRAME)
                except BlockingIOError:
                    break
                if address[2] == PACKET_OUTGOING or len(held) >= MAX_HELD:
                    continue
                heapq.heappush(held, (due_s(now, latency_s, jitter_s, rng), seq, name, frame))
                seq += 1
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, _, name, frame = heapq.heappop(held)
            with contextlib.suppress(OSError):  # the link went down: lost, as on a wire
                other[name].send(frame)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    def stop(_signum: int, _frame: object) -> None:
        raise Stop()

    signal.signal(signal.SIGTERM, stop)
    try:
        serve(args.a, args.b, args.latency_ms / 1000, args.jitter_ms / 1000, args.seed)
    except Stop:
        sys.exit(0)


if __name__ == "__main__":
    main()
