"""One remoting connection on Trio, server or client side: reading, dispatching, writing.

Rules:
- One task at a time reads a connection and decodes its frames. A request runs in that
  reader until its handler first waits; then the request goes on in the task that ran it
  and the reading in a new task, so a long-polling pull never delays another request of
  the same connection and a request that never waits costs no task of its own (see
  ``Connection._read_loop``). A handler whose answer only an event elsewhere decides (a
  sync send waiting for its replicas) returns a ``LaterAnswer`` instead of waiting: no
  task, the request keeps its slot and bytes until ``LaterAnswer.give`` writes the answer
  straight to the socket (what it takes; the rest through the ordered write path), and a
  connection that ends first drops it. A per-connection limit bounds the requests in
  flight; when it is reached the reader stops reading (back-pressure on that client only).
  A reader serves at most ``_REQUESTS_PER_STEP`` requests in one Trio step, then yields:
  a burst never holds the server's loop (other connections, timers, heartbeats) for long.
- One writer at a time per connection: frames go straight to a plain socket when no write
  is under way (``_write_now``); what it does not take, and every TLS write, goes on
  behind a ``trio.Lock``; frames queued meanwhile leave together in the next write. A
  write that waits has a deadline, and a peer that does not read for that long is
  disconnected. The reader never waits for a write.
- A server connection runs its server's ``before_write`` (``RemotingServer``) right before
  frames are taken for the socket (``_write_now``, and ``_write_round`` under the lock):
  the broker writes the CommitLog bytes its answers describe there, once per write, not
  once per send; and at the end of a read whose requests queued no answer (oneway sends).
  When it raises, that connection is dropped without writing a byte more (``drop``): the
  answers it holds must not leave.
- Responses are matched to calls by ``opaque`` only. A call always ends: with the response,
  ``RemotingTimeout`` at its deadline, or ``ConnectionLost`` when the connection dies.
- A malformed or oversize frame closes that connection (logged with the reason); nobody
  else is affected. A request whose handler fails gets an error response, never silence.
- Bytes held for a connection (partial frame plus requests being handled) are budgeted per
  connection and per server (``ByteBudget``, protocol/transport_limits.py); a frame must
  be complete ``frame_timeout_s`` after its first byte. The server and client around connections are in protocol/rpc.py.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import itertools
import logging
import math
import os
import threading
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from typing import Any

import trio
import trio.lowlevel

from protocol.call_deadlines import CallDeadlines
from protocol.codes import FLAG_ONEWAY, FLAG_RESPONSE, RequestCode, ResponseCode
from protocol.command import RemotingCommand
from protocol.errors import (
    ConnectionLost,
    ProtocolError,
    RemotingTimeout,
    RocketError,
    ServerError,
)
from protocol.frame import Frame, FrameDecoder
from protocol.later_answer import UNWATCHED, LaterAnswer, Unwatched, together
from protocol.limits import TransportConfig
from protocol.steps import T
from protocol.tls import TlsStream
from protocol.transport_limits import ByteBudget, ThrottledLog

# The transport's one logger, as before the split (operators and tests filter on it).
log = logging.getLogger("protocol.rpc")

Handler = Callable[
    [RemotingCommand, "Connection"], Awaitable["RemotingCommand | LaterAnswer | None"]
]

_READ_BYTES = 256 * 1024
#: Requests one reader serves in a Trio step at most: a 256 KiB read can hold ~200 sends
#: (more of small ones), and twelve busy connections each serving a whole read in one step
#: held a broker's loop past its 1.2 s controller heartbeat timeout (a live master deposed;
#: bench/stall_bench.py). 64 keeps a step to a few ms; a read of 64 in flight is one step.
_REQUESTS_PER_STEP = 64
_MAX_OPAQUE = 2**31 - 1
_connection_ids = itertools.count(1)
#: An answer's time (``on_answered``): real elapsed time, a tenth of Trio's clock's cost.
_perf_counter = time.perf_counter
_SUCCESS = int(ResponseCode.SUCCESS)


def request_name(code: int) -> str:
    try:
        return RequestCode(code).name
    except ValueError:
        return f"code {code}"


@types.coroutine
def _go_on_awaiting(coro: Coroutine[Any, Any, T], waits_on: Any) -> Generator[Any, Any, T]:
    """Await ``coro`` from where it stands: its first ``send(None)`` yielded ``waits_on``.

    ``yield from`` for a coroutine already started (PEP 380's expansion): what Trio sends
    or throws into this task goes on to ``coro``, what it yields goes on to Trio.
    """
    while True:
        try:
            sent = yield waits_on
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # thrown in by Trio: handed on, never swallowed
            try:
                waits_on = coro.throw(exc)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
        else:
            try:
                waits_on = coro.send(sent)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]


class _ReadBuffer(threading.local):
    """Each thread's one buffer for plain-socket reads.

    ``os.read(fd, n)`` allocates ``n`` bytes and shrinks them to what came: for a 256 KiB
    grant and a 1 KiB request that is an mmap, an mremap and a munmap every few reads
    (strace). A read goes into this buffer instead and what came is copied out; no read
    awaits between the two, so one buffer serves every connection of the thread.
    """

    def __init__(self) -> None:
        self.view = memoryview(bytearray(_READ_BYTES))

    def read(self, fd: int, max_bytes: int) -> bytes:
        view = self.view
        count = os.readv(fd, (view[:max_bytes],))
        return view[:count].tobytes()


_read_buffer = _ReadBuffer()


class _Pending:
    """One call waiting for its answer: a ``trio.Event`` for one waiter, without the
    Event's parking lot (its creation, ``set`` and ``wait`` cost ~2 µs a call more)."""

    __slots__ = ("deadline_s", "error", "finished", "response", "waiter")

    def __init__(self) -> None:
        self.response: RemotingCommand | None = None
        self.error: RocketError | None = None
        #: When the connection's timer ends this call (inf: the call's own scope does).
        self.deadline_s = math.inf
        self.finished = False  # answered, failed or expired: the caller may go on
        self.waiter: trio.lowlevel.Task | None = None

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            trio.lowlevel.reschedule(waiter)

    async def wait(self) -> None:
        """Until ``finish``; a checkpoint either way, cancellable like ``Event.wait``."""
        if self.finished:
            await trio.lowlevel.checkpoint()
            return
        self.waiter = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort)

    def _abort(self, _raise_cancel: Any) -> trio.lowlevel.Abort:
        self.waiter = None
        return trio.lowlevel.Abort.SUCCEEDED


class Connection:
    """One TCP connection, server or client side."""

    def __init__(
        self,
        stream: trio.SocketStream | TlsStream,
        *,
        name: str,
        handlers: Mapping[int, Handler],
        config: TransportConfig,
        budget: ByteBudget | None = None,
        warnings: ThrottledLog | None = None,
        before_write: Callable[[], None] | None = None,
        on_answered: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self.id = next(_connection_ids)
        self._before_write = before_write  # RemotingServer.before_write
        self._on_answered = on_answered  # RemotingServer.on_answered
        self.name = name
        self._stream = stream
        #: A plain TCP socket: read and written with ``os.read`` / ``os.write`` on its file
        #: descriptor right where the bytes are wanted, when that cannot wait
        #: (``_read_granted``, ``_write_now``). Trio's own ``receive_some`` / ``send_all`` end with a yield each,
        #: a Trio batch per read and per write. A TLS stream always goes through Trio.
        self._plain = isinstance(stream, trio.SocketStream)
        # A TLS stream may hold decrypted bytes the socket no longer shows (protocol/tls.py).
        self._wait_readable = getattr(stream, "wait_readable", None) or functools.partial(
            trio.lowlevel.wait_readable, stream.socket
        )
        self._handlers = handlers
        self._config = config
        self._budget = budget or ByteBudget(config)
        self._warnings = warnings or ThrottledLog(config.log_interval_s)
        #: Bytes of this connection counted in the budget: its partial frame, and the
        #: frames of its requests whose handlers still run.
        self._partial_bytes = 0
        self._request_bytes = 0
        #: When the first byte of the partial frame arrived (None: no partial frame).
        self._partial_since_s: float | None = None
        self._send_lock = trio.Lock()
        self._outbox: list[bytes] = []
        #: The open round (None: none), set once written; ``UNWATCHED`` until a sender
        #: has to wait for it (the round's writer then sets the Event made for it).
        self._round_written: trio.Event | Unwatched | None = None
        #: The reader opened the round with its answers (``_post``): it writes it itself
        #: once the read's requests ran (``_flush_posted``).
        self._posted_round = False
        self._pending: dict[int, _Pending] = {}
        #: The calls' deadlines and the scope the timer task sleeps in until the earliest
        #: (None until the first call starts the timer: ``_expire_calls``).
        self._deadlines = CallDeadlines()
        self._timer_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None  # run()'s, for the timer
        self._opaques = itertools.count(1)
        self._serving, self._slot_freed = 0, trio.lowlevel.ParkingLot()  # requests served
        #: The reader is running a request (``_read_loop``); bytes of requests that ended
        #: meanwhile, which it releases with the read's.
        self._reader_serving = False
        self._reader_done_bytes = 0
        #: Requests whose handler returned a ``LaterAnswer`` not given yet, and the
        #: nursery that writes what the socket did not take of one (run()'s).
        self._later: set[LaterAnswer] = set()
        self._answers_nursery: trio.Nursery | None = None
        self._close_reason: str | None = None
        self.closed = trio.Event()
        try:
            host, port = stream.socket.getpeername()[:2]
            self.peer = f"{host}:{port}"
            lhost, lport = stream.socket.getsockname()[:2]
            self.local = f"{lhost}:{lport}"
        except OSError:
            self.peer = self.local = "?"

    def __repr__(self) -> str:
        return f"<Connection #{self.id} {self.name} peer={self.peer}>"

    @property
    def requests_in_flight(self) -> int:
        return self._serving

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for this peer: its partial frame and its requests being handled."""
        return self._partial_bytes + self._request_bytes

    # --- sending ---------------------------------------------------------------------

    async def send(self, command: RemotingCommand) -> None:
        """Write one command; raises ``ConnectionLost`` if the connection is gone."""
        await self._send_bytes(command.encode())

    async def _send_bytes(
        self, data: bytes, *, wait_written: bool = True, combine: bool = True
    ) -> None:
        """Queue one frame and return once it is written (write combining).

        The first frame of a round yields once, so every task that is runnable now can add
        its frame, then one write sends the whole round; the other senders wait for that
        write. Under load this turns one syscall and one lock round per frame into one per
        round (measured: broker CPU per single send halved). Without ``combine`` (the
        sender knows nobody else on this connection is about to send: no other call or
        request in flight) the round is written at once, without that yield. A frame once
        queued is written even if its sender is cancelled meanwhile: it is part of the
        round, and a frame cut short would desynchronise the peer's decoder. Without
        ``wait_written`` a frame that joins a round returns at once (a call waits for its
        answer instead, which a failed write ends too: ``_mark_closed``). Without
        ``combine`` and with no write under way the frame goes straight to the socket
        (``_write_now``) before any round is opened, whose ``trio.Event`` (made, then set)
        costs ~2-3 µs; only what the socket does not take opens one.
        """
        if self.closed.is_set():
            raise ConnectionLost(f"connection to {self.peer} is closed ({self._close_reason})")
        self._outbox.append(data)
        round_written = self._round_written
        if round_written is not None:
            if not wait_written:
                return
            if type(round_written) is Unwatched:
                round_written = self._round_written = trio.Event()
            assert type(round_written) is trio.Event
            await round_written.wait()
            if self.closed.is_set():
                raise ConnectionLost(f"write to {self.peer} failed ({self._close_reason})")
            return
        if not combine and self._write_now():
            return
        round_written = self._round_written = trio.Event()
        try:
            if combine:
                await trio.lowlevel.cancel_shielded_checkpoint()
            await self._write_round()
        finally:
            round_written.set()

    def _post(self, data: bytes) -> None:
        """Queue one frame without waiting for it to be written (the reader's answers).

        When no round is open the reader opens one and writes it once the read's requests
        ran (``_flush_posted``), so all their answers leave in one write.
        """
        if self.closed.is_set():
            return  # the peer will never see it, as with a task's answer
        self._outbox.append(data)
        if self._round_written is None:
            self._round_written = UNWATCHED
            self._posted_round = True

    def _flush_posted(self, nursery: trio.Nursery) -> None:
        """Write the round the reader's answers opened: straight to the socket when no
        write is under way and it takes them all, else (TLS, a write under way, a full
        socket buffer) in a task, so the reader never waits for a write and a peer that
        reads slowly costs it nothing but that task."""
        if self._posted_round:
            self._posted_round = False
            self._write_opened_round(nursery)

    def _write_opened_round(self, nursery: trio.Nursery) -> None:
        """Write the open round, opened without a writer: at once, or in a task
        (``_flush_posted``); the round's Event, if a sender made one, is set once written."""
        try:
            if self._write_now():
                return
        except ConnectionLost:  # the reader notices and closes
            return
        round_written = self._round_written
        if type(round_written) is not trio.Event:  # the task's senders may wait for it
            round_written = self._round_written = trio.Event()
        nursery.start_soon(self._write_posted_round, round_written)

    async def _write_posted_round(self, round_written: trio.Event) -> None:
        try:
            await self._write_round()
        except ConnectionLost:
            pass  # the reader notices and closes
        finally:
            round_written.set()

    async def _write_round(self) -> None:
        """Write every queued frame; a round's creator calls it, once.

        Shielded from the lock wait on: this round's frames (ours and its waiters') are
        queued, and a creator cancelled before it took them would leave them unwritten and
        the round marked written, so every later send on the connection would "succeed"
        without a byte sent. The write itself is shielded too: a frame cut short by a
        caller's deadline would desynchronise the peer's decoder for every later frame. A
        peer that does not read is handled by write_timeout_s alone (from the moment the
        lock is ours), which closes the connection. One cancel scope (µs each) does all this,
        and only when the round cannot go straight to the socket (``_write_now``).
        """
        if self._write_now():
            return
        with trio.CancelScope(shield=True) as scope:
            async with self._send_lock:
                if self._before_write is not None:  # frames queued meanwhile: theirs too
                    self._run_before_write()
                frames, self._outbox = self._outbox, []
                self._round_written = None  # later frames start the next round
                data = frames[0] if len(frames) == 1 else b"".join(frames)
                scope.deadline = trio.current_time() + self._config.write_timeout_s
                try:
                    await self._stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    self._mark_closed(f"write failed: {exc!r}")
                    raise ConnectionLost(f"write to {self.peer} failed: {exc!r}") from None
        if scope.cancelled_caught:
            self._mark_closed(f"peer did not read for {self._config.write_timeout_s} s")
            await self._stream.aclose()
            raise ConnectionLost(f"write to {self.peer} timed out; connection closed")

    def _write_now(self) -> bool:
        """Write the open round's frames straight to the socket if no write is under way;
        True when they all left.

        ``os.write`` on the non-blocking socket never waits and cannot be cancelled, so no
        frame is cut by a deadline here. What the socket did not take goes back to the
        head of the outbox as one piece, the round still open (later frames queue after
        it, nobody else writes first), for the round's writer to send under the lock.
        """
        if not self._plain or self._send_lock.locked():
            return False
        if self._before_write is not None:
            self._run_before_write()
        frames = self._outbox
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        try:
            sent = os.write(self._fileno(), data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._end_round()
            self._mark_closed(f"write failed: {exc!r}")
            raise ConnectionLost(f"write to {self.peer} failed: {exc!r}") from None
        if sent < len(data):
            self._outbox = [data[sent:]]
            return False
        self._end_round()
        return True

    def _run_before_write(self) -> None:
        """The server's ``before_write``; when it fails the connection is dropped with its
        frames unwritten and ``ConnectionLost`` raised, as for a failed write."""
        assert self._before_write is not None
        try:
            self._before_write()
        except Exception as exc:
            reason = f"not written: {exc}"
            self._end_round()
            self.drop(reason)
            raise ConnectionLost(f"write to {self.peer} refused: {exc}") from None

    def drop(self, reason: str) -> None:
        """Close at once and write nothing more: the frames queued must not leave (they
        answer for CommitLog bytes a failed write lost). The peer sees the connection
        end (an unknown outcome, the truth); the reader and any writer notice."""
        self._outbox = []
        self._mark_closed(reason)
        with contextlib.suppress(OSError):
            self._stream.socket.close()

    @property
    def has_unwritten(self) -> bool:
        """Frames are queued and not yet handed to the socket."""
        return bool(self._outbox)

    def _end_round(self) -> None:
        """The open round is written (or failed): later frames start the next one."""
        round_written = self._round_written
        self._outbox, self._round_written = [], None
        if type(round_written) is trio.Event:
            round_written.set()

    def _fileno(self) -> int:
        """The socket's descriptor; raises (as a closed socket would) once it is closed:
        a number kept past the close could name another file by now."""
        fd = self._stream.socket.fileno()
        if fd < 0:
            raise OSError(errno.EBADF, "socket already closed")
        return fd

    async def call(self, request: RemotingCommand, timeout_s: float) -> RemotingCommand:
        """Send a request and wait for its response until ``timeout_s`` elapses."""
        opaque = self._next_opaque()
        pending = _Pending()
        self._pending[opaque] = pending
        try:
            frame = request.encode_as(opaque, request.flag & ~FLAG_ONEWAY)
            timer = self._timer_scope
            if timer is None:  # the connection's timer is not running (yet): a scope
                self._start_timer()
                with trio.move_on_after(timeout_s):
                    await self._send_request(frame)
                    await pending.wait()
            else:  # the timer ends the call at its deadline (a scope costs ~5-7 µs)
                pending.deadline_s = deadline_s = trio.current_time() + timeout_s
                self._deadlines.add(opaque, deadline_s, len(self._pending), self._call_waits)
                if deadline_s < timer.deadline:  # noqa: PLR1730 (the setter costs µs)
                    timer.deadline = deadline_s
                await self._send_request(frame)
                await pending.wait()
            if pending.error is not None:
                raise pending.error
            if pending.response is None:
                raise RemotingTimeout(
                    f"{request_name(request.code)} to {self.peer} got no answer in {timeout_s} s"
                )
            return pending.response
        finally:
            self._pending.pop(opaque, None)

    async def _send_request(self, frame: bytes) -> None:
        """Write a call's request frame (its answer, or the connection's loss, ends the call).
        A call alone on the connection combines with nobody: straight to the socket."""
        await self._send_bytes(frame, wait_written=False, combine=len(self._pending) > 1)

    def _call_waits(self, opaque: int, deadline_s: float) -> bool:
        pending = self._pending.get(opaque)
        return pending is not None and pending.deadline_s == deadline_s

    def _start_timer(self) -> None:
        nursery, self._nursery = self._nursery, None  # one timer per connection
        if nursery is None or self.closed.is_set():
            return
        # RuntimeError: closed to new arrivals, its last task ended and run() is about to
        # mark the connection closed. This call keeps its own scope; that close fails it.
        with contextlib.suppress(RuntimeError):
            nursery.start_soon(self._expire_calls)

    async def _expire_calls(self) -> None:
        """End each call whose deadline passed, as its own cancel scope would have: it
        wakes with neither answer nor error and raises ``RemotingTimeout``. Sleeps until
        the earliest deadline; a call with an earlier one moves that wake-up."""
        try:
            while True:
                expired, next_s = self._deadlines.expire(trio.current_time(), self._call_waits)
                for opaque in expired:
                    self._pending[opaque].finish()
                with trio.CancelScope(deadline=next_s) as self._timer_scope:
                    await trio.sleep_forever()
        finally:
            self._timer_scope = None

    async def oneway(self, request: RemotingCommand) -> None:
        await self.send(request.with_opaque(self._next_opaque(), request.flag | FLAG_ONEWAY))

    def _next_opaque(self) -> int:
        opaque = next(self._opaques)
        if opaque >= _MAX_OPAQUE:
            self._opaques = itertools.count(1)
        return opaque

    # --- receiving -------------------------------------------------------------------

    async def run(self) -> None:
        """Read and dispatch until the peer goes away; then fail every pending call."""
        decoder = FrameDecoder(max_frame_bytes=self._config.max_frame_bytes)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = self._answers_nursery = nursery
                await self._read_loop(decoder, nursery, collections.deque())
        finally:
            self._answers_nursery = None
            self._mark_closed(self._close_reason or "closed")
            for later in self._later:  # their bytes are released with the rest below
                later.drop()
            self._later.clear()
            # Every request task has ended: what is left was never handed to one.
            self._budget.release(self._partial_bytes + self._request_bytes)
            self._partial_bytes = self._request_bytes = 0
            with trio.CancelScope(shield=True):
                await self._stream.aclose()

    async def _read_loop(
        self,
        decoder: FrameDecoder,
        nursery: trio.Nursery,
        commands: collections.deque[tuple[RemotingCommand, int]],
    ) -> None:
        """Read, decode and serve until reading ends; then cancel the requests that wait.

        Requests run here, in the reader, until their handler first waits (most never
        do: a send to an ASYNC_FLUSH broker, a route lookup), so they cost no task; their
        answers are queued as they come and written together (``_post``). A handler that
        waits has already tied what it waits for to this task (Trio's traps name the
        current task), so it cannot move to another: this task finishes that request
        instead, and the reading, with the rest of this read's requests, goes on in a new
        task. Exactly one task reads at any time; every request still ends in this
        connection's nursery, cancelled when reading ends.
        """
        while True:
            # Bytes of this read done with: the answers' (their callers own them now) and
            # the requests served to their end here. Released together, before anything
            # here waits (one budget release a step, not one a frame).
            done_bytes = 0
            in_step = 0  # requests served in this step
            while commands:
                if in_step >= _REQUESTS_PER_STEP:
                    # A read of hundreds of requests is served a slice per step: the
                    # server's other tasks (a broker's controller heartbeats) run between.
                    in_step = 0
                    if done_bytes:
                        self._release_done(done_bytes)
                        done_bytes = 0
                    self._end_of_read(nursery, served=True)  # this slice's answers go first
                    await trio.lowlevel.checkpoint()
                command, size_bytes = commands.popleft()
                if command.flag & FLAG_RESPONSE:
                    done_bytes += size_bytes  # the caller owns it now
                    self._complete(command)
                    continue
                in_step += 1
                # A slot per request, counted (a CapacityLimiter's borrow and release cost
                # ~4 µs a request); no checkpoint while slots are free, so every request of
                # one read is served before the reader yields (their answers share a round).
                while self._serving >= self._config.max_requests_in_flight:
                    if done_bytes:
                        self._release_done(done_bytes)
                        done_bytes = 0
                    self._end_of_read(nursery, served=in_step > 0)  # the answers so far first
                    await self._slot_freed.park()  # only the reader waits; a release wakes it
                self._serving += 1
                serving = self._serve_request(command, size_bytes)
                self._reader_serving = True
                try:
                    waits_on = serving.send(None)
                except StopIteration as served:
                    if served.value is not None:
                        self._post(served.value)
                    continue
                finally:
                    # What ended while it ran (this request, a LaterAnswer it gave) is
                    # released with the read's (``_request_done``).
                    self._reader_serving = False
                    done_bytes += self._reader_done_bytes
                    self._reader_done_bytes = 0
                if done_bytes:  # this task now waits for the handler
                    self._release_done(done_bytes)
                nursery.start_soon(self._read_loop, decoder, nursery, commands)
                answer = await _go_on_awaiting(serving, waits_on)
                if answer is not None:
                    with contextlib.suppress(ConnectionLost):  # the reader notices a loss
                        # No other request of this connection in flight: nobody to wait for.
                        await self._send_bytes(answer, combine=self._serving > 0)
                return
            if done_bytes:
                self._release_done(done_bytes)
            self._end_of_read(nursery, served=in_step > 0)
            if (data := await self._receive(decoder)) is None:
                break
            try:
                frames = self._feed(decoder, data)
                # All decoded first: a bad frame closes the connection before any is served.
                commands.extend([(RemotingCommand.from_frame(f), f.size_bytes) for f in frames])
            except ProtocolError as exc:
                self._close_reason = f"protocol error: {exc}"
                self._warnings.warning(
                    "%s: closing connection from %s: %s", self.name, self.peer, exc
                )
                break
        self._flush_posted(nursery)  # defensive: _end_of_read has written every answer
        nursery.cancel_scope.cancel()

    def _release_done(self, size_bytes: int) -> None:
        """Answers handed to their callers and requests served: their bytes leave this
        connection's count (one budget release for a read's, not one each)."""
        self._request_bytes -= size_bytes
        self._budget.release(size_bytes)

    def _end_of_read(self, nursery: trio.Nursery, *, served: bool) -> None:
        """The read's requests ran up to their first wait: their answers leave, in one
        write. Requests ``served`` that opened no round (oneway sends) still run the
        server's ``before_write`` when no write is under way: what they left for it (held
        CommitLog bytes, the replication wake-up they owe) is done now, not at some later
        write. If it fails the connection is dropped, which the reader sees next."""
        if self._posted_round:
            self._flush_posted(nursery)
        elif served and self._before_write is not None and self._round_written is None:
            with contextlib.suppress(ConnectionLost):
                self._run_before_write()

    def _feed(self, decoder: FrameDecoder, data: bytes) -> list[Frame]:
        """Decode ``data``; the frames' bytes move from the partial count to the requests'.

        Every completed frame is counted as a request's until the caller sorts out the
        responses (released at once). A frame left partial starts its clock now unless it
        had started before this read.
        """
        had_partial = decoder.buffered_bytes > 0
        frames = decoder.feed(data)
        # The partial count held the decoder's bytes and this read: what the decoder
        # keeps is still partial, the rest formed the frames (no sum over them).
        partial_bytes = decoder.buffered_bytes
        self._request_bytes += self._partial_bytes - partial_bytes
        self._partial_bytes = partial_bytes
        if not partial_bytes:
            self._partial_since_s = None
        elif frames or not had_partial:
            self._partial_since_s = trio.current_time()
        return frames

    async def _receive(self, decoder: FrameDecoder) -> bytes | None:
        """The next bytes from the peer within the budget; None once the connection ends
        (``_close_reason`` says why).

        Waits for the socket to be readable before asking the budget, so idle connections
        reserve nothing. A frame left partial must be completed ``frame_timeout_s`` after
        its first byte; time spent waiting for this connection's own handlers (its budget)
        does not count, time waiting for the server's budget does.
        """
        while not self.closed.is_set():  # else closed locally (aclose, a write timeout)
            deadline = math.inf
            if self._partial_since_s is not None:
                deadline = self._partial_since_s + self._config.frame_timeout_s
            try:
                if deadline == math.inf:  # no partial frame: no clock (a scope costs µs)
                    await self._wait_readable()
                else:
                    with trio.move_on_at(deadline):
                        await self._wait_readable()
                if deadline == math.inf or trio.current_time() < deadline:
                    granted = self._budget.ledger.grant(self.buffered_bytes, _READ_BYTES)
                    if granted:
                        try:
                            return await self._read_granted(granted)
                        except BlockingIOError:
                            continue  # readable, and yet nothing to read: wait again
                    if await self._wait_for_budget(deadline):
                        continue
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self._close_reason = f"read failed: {exc!r}"
                return None
            self._frame_timed_out(decoder)
            return None
        return None

    async def _wait_for_budget(self, deadline: float) -> bool:
        """Wait for released bytes; False when the frame deadline passed meanwhile."""
        if self.buffered_bytes >= self._config.max_connection_buffered_bytes:
            # Our own back-pressure, not the peer's slowness: the frame clock stands still.
            waited_since = trio.current_time()
            await self._budget.lot.park()
            if self._partial_since_s is not None:
                self._partial_since_s += trio.current_time() - waited_since
            return True
        with trio.move_on_at(deadline):
            await self._budget.lot.park()
            return True
        return False

    async def _read_granted(self, granted: int) -> bytes | None:
        try:
            if self._plain:  # readable: the bytes are there, no need to yield for them
                data = _read_buffer.read(self._fileno(), granted)
            else:
                data = await self._stream.receive_some(granted)
        except BaseException:
            self._budget.ledger.settle(granted, 0)
            raise
        if not data:
            self._budget.ledger.settle(granted, 0)
            self._close_reason = "peer closed the connection"
            return None
        # Held as partial-frame bytes until _feed sorts them into frames.
        self._budget.ledger.settle(granted, len(data))
        self._partial_bytes += len(data)
        return data

    def _frame_timed_out(self, decoder: FrameDecoder) -> None:
        announced = decoder.pending_frame_bytes
        what = "a frame" if announced is None else f"a frame of {announced} bytes"
        self._close_reason = (
            f"{what} was not completed within {self._config.frame_timeout_s} s "
            f"({decoder.buffered_bytes} bytes received)"
        )
        self._warnings.warning(
            "%s: closing connection from %s: %s", self.name, self.peer, self._close_reason
        )

    def _complete(self, response: RemotingCommand) -> None:
        pending = self._pending.get(response.opaque)
        if pending is None:
            log.debug("%s: response for unknown opaque %d (late?)", self.name, response.opaque)
            return
        pending.response = response
        pending.finish()

    async def _serve_request(self, request: RemotingCommand, size_bytes: int) -> bytes | None:
        """Run the handler; the answer's frame (None for a oneway request, no answer, or
        an answer given later: ``_take_later``). A handler's ``ServerError`` is answered
        with its code and remark; any other exception with SYSTEM_ERROR (logged). Each
        answer of a known request code is reported to ``on_answered`` with its time.

        One coroutine for the request, the handler's aside (the error handling and the
        timing here, not in wrappers around each handler: a coroutine each, per request)."""
        later = None
        code = request.code
        handler = self._handlers.get(code)
        on_answered = None if handler is None else self._on_answered
        start_s = _perf_counter() if on_answered is not None else 0.0
        try:
            if handler is None:
                response: RemotingCommand | LaterAnswer | None = request.respond(
                    ResponseCode.REQUEST_CODE_NOT_SUPPORTED,
                    f"request code {code} ({request_name(code)}) is not supported",
                )
            else:
                try:
                    response = await handler(request, self)
                except ServerError as exc:
                    response = request.respond(exc.code, exc.remark)
                except ProtocolError as exc:
                    response = request.respond(ResponseCode.SYSTEM_ERROR, str(exc))
                except Exception as exc:
                    log.exception(
                        "%s: handler of %s from %s failed", self.name, request_name(code), self.peer
                    )
                    response = request.respond(
                        ResponseCode.SYSTEM_ERROR, f"internal error: {type(exc).__name__}: {exc}"
                    )
            if type(response) is LaterAnswer:
                if not response.given:
                    later = response
                    if on_answered is not None:  # timed when given
                        response.watch(
                            lambda answer: on_answered(code, answer.code, _perf_counter() - start_s)
                        )
                    return None
                response = response._response  # given before it got here
            if on_answered is not None:
                answered = _SUCCESS if response is None else response.code  # type: ignore[union-attr]
                on_answered(code, answered, _perf_counter() - start_s)
            if response is None or request.flag & FLAG_ONEWAY:  # is_oneway, a frame less
                return None
            return self._encode_response(request, response)  # type: ignore[arg-type]
        finally:
            if later is None:
                self._request_done(size_bytes)
            else:
                self._take_later(later, request, size_bytes)

    def _request_done(self, size_bytes: int) -> None:
        """A request ended: its slot and its bytes go back (the bytes with the read's
        when the reader is serving: it releases them before it waits)."""
        self._serving -= 1
        if self._serving + 1 >= self._config.max_requests_in_flight:
            self._slot_freed.unpark()  # the reader may wait for this slot
        if self._reader_serving:
            self._reader_done_bytes += size_bytes
            return
        self._request_bytes -= size_bytes
        self._budget.release(size_bytes)

    def _take_later(self, later: LaterAnswer, request: RemotingCommand, size_bytes: int) -> None:
        if self._answers_nursery is None:  # ending: nobody will write it
            later.drop()
            self._request_done(size_bytes)
            return
        later._conn, later._request, later._size_bytes = self, request, size_bytes
        self._later.add(later)

    def _answer_later(self, later: LaterAnswer, response: RemotingCommand) -> None:
        """``LaterAnswer.give``: the request ends and its answer goes straight to the
        socket when no round is open (a round open holds earlier frames: it joins it)."""
        self._later.discard(later)
        self._request_done(later._size_bytes)
        request = later._request
        assert request is not None
        if request.is_oneway or self.closed.is_set():
            return
        self._outbox.append(self._encode_response(request, response))
        if self._round_written is not None:
            return  # its writer (a task, or the reader at the end of its read) sends it
        nursery = self._answers_nursery
        assert nursery is not None  # set while any later answer is pending
        # Nobody can wait for this round before it is written: the block is synchronous.
        self._round_written = UNWATCHED
        if together.depth:  # more answers may come: the round leaves at the block's end
            together.rounds.append((self, nursery))
        else:
            self._write_opened_round(nursery)

    def _encode_response(self, request: RemotingCommand, response: RemotingCommand) -> bytes:
        """The response frame, numbered as the request and flagged a response (whatever
        the handler set); one the handler built badly becomes a SYSTEM_ERROR answer."""
        try:
            return response.encode_as(request.opaque, response.flag | FLAG_RESPONSE)
        except Exception as exc:  # e.g. non-str ext values, a header over the cap
            log.exception(
                "%s: response to %s from %s cannot be encoded",
                self.name,
                request_name(request.code),
                self.peer,
            )
            return request.respond(
                ResponseCode.SYSTEM_ERROR,
                f"internal error: response cannot be encoded: {type(exc).__name__}",
            ).encode()

    def _mark_closed(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self._close_reason = reason
        self.closed.set()
        error = ConnectionLost(f"connection to {self.peer} lost ({reason}); outcome unknown")
        for pending in self._pending.values():
            pending.error = error
            pending.finish()

    async def aclose(self) -> None:
        self._mark_closed("closed locally")
        await self._stream.aclose()
