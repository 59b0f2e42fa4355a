"""How every benchmark measures: percentiles, latency histograms, meters, CPU and memory.

Rules:
- One definition of a percentile, nearest rank: the p-th percentile of n values is the
  value of rank ``ceil(p / 100 * n)`` (at least 1) in ascending order. p50 of 4 values is
  the 2nd, p99 of 100 values the 99th, p100 the maximum. ``percentile`` applies it to a
  list of samples (a few hundred at most: failover rounds, recovery times); the latency
  histogram applies it to its buckets. Benchmarks, chaos checkers and reports all use it.
- Memory is bounded: a latency is recorded into ``LatencyHistogram``, never appended to a
  list that grows with the run. Latencies are whole microseconds in log-linear buckets
  (HdrHistogram's layout: exact below 1024 us, then 512 sub-buckets per power of two), so a
  percentile is within 0.2 % of the exact nearest-rank value; count, mean, min and max are
  exact.
- Per-second figures are bucketed by completion time: second k of a run holds what
  completed in ``[t0 + k, t0 + k + 1)``; it can be reported at ``t0 + k + 1``, when no
  later event falls into it. A trailing partial second counts when it lasted at least
  ``MIN_PARTIAL_SECOND_S`` (its rate scaled to its length).
- A ``Meter`` counts messages (a batch of 32 is 32), requests, bytes and failures; its
  latency is recorded once per message (OpenMessaging-Benchmark's way) or once per request.
- CPU is user + system seconds: of another process from ``/proc/<pid>/stat`` (utime and
  stime, fields 14 and 15, in clock ticks; every thread), of this process from
  ``os.times()``. CPU microseconds per message are steadier than msg/s on a shared machine:
  they do not count the time a process waited for a core another one held.
- Pure down to the section "reading /proc": time comes in as ``now_s`` (a monotonic clock).
  That last section is a thin shell of file reads around pure ``parse_*`` functions.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Generic, TypeVar

import attrs

T = TypeVar("T")

#: Sub-bucket bits: values below 2**(bits + 1) us are exact, relative error <= 2**-bits.
SUB_BUCKET_BITS = 9
#: A trailing partial second shorter than this is left out of the per-second figures.
MIN_PARTIAL_SECOND_S = 0.5
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- percentiles (pure) --------------------------------------------------------------------


def nearest_rank(count: int, percentile: float) -> int:
    """1-based rank of the ``percentile`` value among ``count`` sorted values (>= 1).

    Exact arithmetic: p7 of 100 values is rank 7, where ``0.07 * 100`` in floats is above 7.
    """
    assert count > 0 and 0 <= percentile <= 100, (count, percentile)
    return max(1, math.ceil(Fraction(str(percentile)) * count / 100))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q``-th percentile (``q`` in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    return sorted(values)[nearest_rank(len(values), q) - 1]


# --- latency histogram (pure) ----------------------------------------------------------------


#: A value's bucket drops its low ``bit_length - _BUCKET_SHIFT_FROM`` bits (when positive).
_BUCKET_SHIFT_FROM = SUB_BUCKET_BITS + 1


def bucket_floor(value_us: int) -> int:
    """The lowest value sharing ``value_us``'s bucket (the bucket's key)."""
    shift = max(0, value_us.bit_length() - SUB_BUCKET_BITS - 1)
    return (value_us >> shift) << shift


def bucket_ceiling(value_us: int) -> int:
    """The highest value sharing ``value_us``'s bucket (HdrHistogram's highestEquivalent)."""
    shift = max(0, value_us.bit_length() - SUB_BUCKET_BITS - 1)
    return (((value_us >> shift) + 1) << shift) - 1


def to_us(seconds: float) -> int:
    """A duration in whole microseconds (negative clock steps count as 0)."""
    return max(0, round(seconds * 1_000_000))


def us_to_ms(value_us: float) -> float:
    return round(value_us / 1000, 3)


@attrs.define
class LatencyHistogram:
    """Counts of latencies (us) by bucket; exact count, sum, min and max."""

    counts: dict[int, int] = attrs.field(factory=dict)
    count: int = 0
    total_us: int = 0
    min_us: int = 0
    max_us: int = 0

    def record(self, value_us: int, times: int = 1) -> None:
        # Called per message by the benchmarks' meters: bucket_floor inlined (the consume
        # bench spent 12 % of its CPU in its meter).
        assert value_us >= 0 and times >= 1, (value_us, times)
        shift = value_us.bit_length() - _BUCKET_SHIFT_FROM
        key = (value_us >> shift) << shift if shift > 0 else value_us
        counts = self.counts
        counts[key] = counts.get(key, 0) + times
        if not self.count or value_us < self.min_us:
            self.min_us = value_us
        if value_us > self.max_us:  # noqa: PLR1730 (max() is a call per message)
            self.max_us = value_us
        self.count += times
        self.total_us += value_us * times

    def merge(self, other: LatencyHistogram) -> None:
        if not other.count:
            return
        for key, n in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + n
        self.min_us = other.min_us if not self.count else min(self.min_us, other.min_us)
        self.count += other.count
        self.total_us += other.total_us
        self.max_us = max(self.max_us, other.max_us)

    @property
    def mean_us(self) -> float:
        return self.total_us / self.count if self.count else 0.0

    def values_at(self, percentiles: Sequence[float]) -> list[int]:
        """The value (us) at each percentile: its bucket's highest value, at most the max;
        0 when empty."""
        if not self.count:
            return [0 for _ in percentiles]
        keys = sorted(self.counts)
        out = []
        for p in percentiles:
            rank = nearest_rank(self.count, p)
            seen = 0
            for key in keys:
                seen += self.counts[key]
                if seen >= rank:
                    out.append(min(bucket_ceiling(key), self.max_us))
                    break
        return out

    def value_at(self, percentile: float) -> int:
        return self.values_at([percentile])[0]

    def ms_at(self, percentile: float) -> float | None:
        """The value at ``percentile`` in ms (3 decimals); None when empty."""
        return us_to_ms(self.value_at(percentile)) if self.count else None


def merged(histograms: Iterable[LatencyHistogram]) -> LatencyHistogram:
    total = LatencyHistogram()
    for histogram in histograms:
        total.merge(histogram)
    return total


# --- per-second series and the meter (pure) ------------------------------------------------


class SecondSeries(Generic[T]):
    """One value of ``T`` per second since ``start_s``, created on first use."""

    def __init__(self, start_s: float, factory: Callable[[], T]) -> None:
        self.start_s = start_s
        self._factory = factory
        self.buckets: list[T] = []

    def index(self, now_s: float) -> int:
        """The second ``now_s`` falls in (times before the start count as second 0)."""
        return max(0, math.floor(now_s - self.start_s))

    def get(self, index: int) -> T:
        """Second ``index``, created (with every second before it) when new."""
        assert index >= 0, index
        while len(self.buckets) <= index:
            self.buckets.append(self._factory())
        return self.buckets[index]

    def at(self, now_s: float) -> T:
        # A meter records every event here, most into the newest second: that one without
        # ``index`` and ``get`` (``int`` is ``math.floor`` from 0 up; below 0 both give 0).
        index = int(now_s - self.start_s)
        buckets = self.buckets
        if 0 <= index < len(buckets):
            return buckets[index]
        return self.get(self.index(now_s))

    def spans(self, end_s: float) -> list[tuple[T, float]]:
        """(second, its length in s) up to ``end_s``: whole seconds, plus a trailing partial
        one of at least ``MIN_PARTIAL_SECOND_S`` (or the only one, in a run under 1 s)."""
        elapsed = max(0.0, end_s - self.start_s)
        whole = math.floor(elapsed)
        out = [(self.get(k), 1.0) for k in range(whole)]
        partial = elapsed - whole
        if partial >= MIN_PARTIAL_SECOND_S or (whole == 0 and partial > 0):
            out.append((self.get(whole), partial))
        return out


@attrs.define
class Tally:
    """What completed in one second, or in a whole run. Failures count messages too."""

    msgs: int = 0
    requests: int = 0
    nbytes: int = 0
    #: No answer (a timeout, a lost connection): producer.sh's "Send Failed".
    send_failed: int = 0
    #: An answer that is not a success: producer.sh's "Response Failed".
    response_failed: int = 0
    rt: LatencyHistogram = attrs.field(factory=LatencyHistogram)

    @property
    def failed(self) -> int:
        return self.send_failed + self.response_failed


@attrs.define
class Meter:
    """Counts, bytes, failures and latencies of a run: per second and in total."""

    seconds: SecondSeries[Tally]
    #: Record a request's latency once per message in it (OMB), else once per request.
    latency_per_message: bool = True
    msgs: int = 0
    requests: int = 0
    nbytes: int = 0
    send_failed: int = 0
    response_failed: int = 0
    #: Messages acknowledged, by the status the caller named.
    statuses: dict[str, int] = attrs.field(factory=dict)
    #: Failed messages, by the kind the caller named (a response code, an exception type).
    errors: dict[str, int] = attrs.field(factory=dict)
    first_error: str | None = None
    #: Messages acknowledged before ``end_s`` (a request in flight at the end finishes later).
    msgs_in_window: int = 0
    end_s: float | None = None

    @classmethod
    def starting(cls, now_s: float, *, latency_per_message: bool = True) -> Meter:
        return cls(SecondSeries(now_s, Tally), latency_per_message=latency_per_message)

    @property
    def start_s(self) -> float:
        return self.seconds.start_s

    @property
    def failed(self) -> int:
        return self.send_failed + self.response_failed

    def record_ok(
        self, now_s: float, latency_s: float, msgs: int = 1, nbytes: int = 0, status: str = ""
    ) -> None:
        """A request of ``msgs`` messages (``nbytes`` bytes) succeeded at ``now_s``."""
        second = self.seconds.at(now_s)
        second.msgs += msgs
        second.requests += 1
        second.nbytes += nbytes
        weight = msgs if self.latency_per_message else 1
        if weight > 0:
            second.rt.record(to_us(latency_s), weight)
        self.msgs += msgs
        self.requests += 1
        self.nbytes += nbytes
        if self.end_s is None:
            self.msgs_in_window += msgs
        if status:
            self.statuses[status] = self.statuses.get(status, 0) + msgs

    def record_many_ok(self, now_s: float, msgs: int) -> None:
        """``msgs`` requests of one message each succeeded at ``now_s``; their latencies
        are recorded by the caller (``ConsumeMeter.record_all``)."""
        second = self.seconds.at(now_s)
        second.msgs += msgs
        second.requests += msgs
        self.msgs += msgs
        self.requests += msgs
        if self.end_s is None:
            self.msgs_in_window += msgs

    def record_failed(
        self, now_s: float, msgs: int = 1, *, response: bool, kind: str = "", detail: str = ""
    ) -> None:
        """A request of ``msgs`` messages failed: with ``response`` the server answered with
        an error, else no answer came. ``kind`` is counted in ``errors``; the first
        ``detail`` is kept."""
        second = self.seconds.at(now_s)
        second.requests += 1
        self.requests += 1
        if response:
            second.response_failed += msgs
            self.response_failed += msgs
        else:
            second.send_failed += msgs
            self.send_failed += msgs
        if kind:
            self.errors[kind] = self.errors.get(kind, 0) + msgs
        if detail and self.first_error is None:
            self.first_error = detail

    def latency(self) -> LatencyHistogram:
        """Every latency recorded, all seconds together."""
        return merged(s.rt for s in self.seconds.buckets)

    def finish(self, now_s: float) -> None:
        """The run ended at ``now_s`` (the first call wins)."""
        if self.end_s is None:
            self.end_s = now_s

    def elapsed_s(self, now_s: float | None = None) -> float:
        end = self.end_s if now_s is None else now_s
        assert end is not None, "finish() the meter first"
        return max(0.0, end - self.start_s)

    def rate_per_s(self) -> float:
        """Messages acknowledged within the run's window per second of it."""
        elapsed = self.elapsed_s()
        return self.msgs_in_window / elapsed if elapsed > 0 else 0.0

    def spans(self) -> list[tuple[Tally, float]]:
        """Each second up to the end with its length (see ``SecondSeries.spans``)."""
        assert self.end_s is not None, "finish() the meter first"
        return self.seconds.spans(self.end_s)

    def whole_seconds(self) -> list[Tally]:
        """The seconds that ended before the run did."""
        return [self.seconds.get(k) for k in range(math.floor(self.elapsed_s()))]


# --- CPU and memory (pure) -------------------------------------------------------------------


@attrs.frozen
class CpuTimes:
    """CPU seconds a process used so far, in user and in system (kernel) mode."""

    user_s: float
    system_s: float

    @property
    def total_s(self) -> float:
        return self.user_s + self.system_s

    def __add__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.user_s + other.user_s, self.system_s + other.system_s)

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.user_s - other.user_s, self.system_s - other.system_s)


def parse_proc_stat_cpu(text: str, clk_tck: int = CLK_TCK) -> CpuTimes:
    """utime and stime of a ``/proc/<pid>/stat`` line (the command name may hold spaces and
    parentheses, so fields are counted from the last ``)``)."""
    fields = text.rpartition(")")[2].split()
    # fields[0] is field 3 (state): utime is field 14, stime field 15.
    return CpuTimes(int(fields[11]) / clk_tck, int(fields[12]) / clk_tck)


def parse_machine_busy_s(text: str, clk_tck: int = CLK_TCK) -> float:
    """Busy CPU seconds of every core together (all but idle and iowait) from ``/proc/stat``."""
    values = [int(v) for v in text.split("\n", 1)[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / clk_tck


def parse_proc_memory(text: str) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile, RssShmem in bytes from ``/proc/<pid>/status``."""
    wanted = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in wanted:
            out[key] = int(value.split()[0]) * 1024
    return out


def us_per_msg(cpu_s: float, msgs: int) -> float | None:
    """CPU microseconds per message; None when no message was counted."""
    return round(1e6 * cpu_s / msgs, 2) if msgs > 0 else None


@attrs.frozen(kw_only=True)
class CpuSample:
    """CPU used so far by this process, by some other processes and by the whole machine."""

    wall_s: float
    own: CpuTimes
    #: (pid, its CPU) of each watched process; None once it could not be read (it ended).
    others: tuple[tuple[int, CpuTimes | None], ...] = ()
    machine_busy_s: float = 0.0


@attrs.frozen(kw_only=True)
class CpuUse:
    """CPU used between two samples (``cpu_between``)."""

    wall_s: float
    own: CpuTimes
    #: The watched processes together; None when there were none or one could not be read.
    others: CpuTimes | None
    machine_busy_s: float

    def pct(self, cpu_s: float) -> float:
        """``cpu_s`` as % of one core over the span."""
        return round(100 * cpu_s / max(1e-9, self.wall_s), 1)


def cpu_between(start: CpuSample, end: CpuSample) -> CpuUse:
    """What was used from ``start`` to ``end`` (samples of the same processes)."""
    assert [pid for pid, _ in start.others] == [pid for pid, _ in end.others]
    pairs = zip(start.others, end.others, strict=True)
    deltas = [b - a for (_, a), (_, b) in pairs if a is not None and b is not None]
    complete = bool(deltas) and len(deltas) == len(start.others)
    return CpuUse(
        wall_s=end.wall_s - start.wall_s,
        own=end.own - start.own,
        others=sum(deltas, CpuTimes(0.0, 0.0)) if complete else None,
        machine_busy_s=end.machine_busy_s - start.machine_busy_s,
    )


def parse_listening_inodes(text: str, port: int, hosts: Iterable[str]) -> set[int]:
    """Socket inodes listening on ``port`` in a ``/proc/net/tcp`` or ``tcp6`` table, bound
    to one of ``hosts`` (as the kernel prints them: hex) or to every address."""
    wildcard = {"00000000", "0" * 32}
    wanted = {h.upper() for h in hosts} | wildcard
    out: set[int] = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != "0A":  # 0A: TCP_LISTEN
            continue
        host, _, port_hex = fields[1].partition(":")
        if int(port_hex, 16) == port and host.upper() in wanted:
            out.add(int(fields[9]))
    return out


def loopback_port(address: str) -> int | None:
    """The port of a ``host:port`` on this machine's loopback, else None."""
    host, _, port = address.rpartition(":")
    if host not in ("localhost", "::1", "[::1]") and not host.startswith("127."):
        return None
    return int(port) if port.isdigit() else None


def proc_hex_ipv4(host: str) -> str:
    """``127.0.0.1`` as ``/proc/net/tcp`` prints it (``0100007F``: little-endian hex)."""
    parts = [int(p) for p in host.split(".")]
    return "".join(f"{p:02X}" for p in reversed(parts))


# --- reading /proc (the I/O shell) -------------------------------------------------------------


def own_cpu() -> CpuTimes:
    """This process's CPU (every thread)."""
    times = os.times()
    return CpuTimes(times.user, times.system)


def process_cpu(pid: int) -> CpuTimes | None:
    """``pid``'s CPU from ``/proc/<pid>/stat``; None when it is gone or unreadable."""
    try:
        return parse_proc_stat_cpu(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, IndexError, ValueError):
        return None


def machine_busy_s() -> float:
    return parse_machine_busy_s(Path("/proc/stat").read_text())


def loadavg_1m() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def proc_memory(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile, RssShmem of ``pid`` in bytes."""
    return parse_proc_memory(Path(f"/proc/{pid}/status").read_text())


def sample_cpu(pids: Sequence[int] = ()) -> CpuSample:
    return CpuSample(
        wall_s=time.perf_counter(),
        own=own_cpu(),
        others=tuple((pid, process_cpu(pid)) for pid in pids),
        machine_busy_s=machine_busy_s(),
    )


def listening_pids(address: str) -> list[int]:
    """Pids of this user's processes listening on ``address`` when it is a loopback
    ``host:port`` (from ``/proc/net/tcp{,6}`` and each ``/proc/<pid>/fd``); else []."""
    port = loopback_port(address)
    if port is None:
        return []
    host = address.rpartition(":")[0]
    hosts = [proc_hex_ipv4(host)] if host.startswith("127.") else []
    inodes: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            inodes |= parse_listening_inodes(Path(table).read_text(), port, hosts)
        except OSError:
            continue
    if not inodes:
        return []
    links = {f"socket:[{inode}]" for inode in inodes}
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and _holds_any(proc, links):
            found.append(int(proc.name))
    return sorted(found)


def _holds_any(proc: Path, links: set[str]) -> bool:
    try:
        return any(os.readlink(fd) in links for fd in (proc / "fd").iterdir())
    except OSError:  # another user's process, or one that just ended
        return False
