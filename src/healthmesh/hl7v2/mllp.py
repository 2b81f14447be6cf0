"""An MLLP listener: HL7 v2 messages in ``<VT> message <FS><CR>`` frames over TCP.

Each message is answered in order on its connection, and only once it is settled:
AA after its transaction has committed and the store's log is fsynced; AE or AR
(naming the problem in MSA-3 and ERR) after the message and its reason are fsynced
into the dead-letter folder. Stores are serialised on one writer thread, so the
event loop keeps reading other connections meanwhile.

The framing is read by hand rather than with python-hl7's ``hl7.mllp`` streams,
because those treat bytes outside a frame and an over-long frame as fatal to the
connection; here garbage between frames is skipped, an over-long message is
answered AR (and its bytes discarded without being held), and a frame cut off by
the peer is dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from healthmesh.hl7v2.ack import build_ack
from healthmesh.hl7v2.deadletter import DeadLetter
from healthmesh.hl7v2.errors import INTERNAL_ERROR, ConversionError, MessageRejected
from healthmesh.hl7v2.intake import Hl7Intake, Receipt
from healthmesh.node import Node

__all__ = ["MllpServer", "SessionTally", "frame", "send"]

VT, FS, CR = b"\x0b", b"\x1c", b"\x0d"
READ_SIZE = 64 * 1024
MAX_CONNECTIONS = 64
AUDIT_EVERY = 1000  # messages per audit record on a long-lived connection
log = logging.getLogger(__name__)


def frame(message: bytes) -> bytes:
    """Wrap one message in an MLLP frame."""
    return VT + message + FS + CR


@dataclass(slots=True)
class SessionTally:
    """Counts of one connection, written to the audit log in batches."""

    peer: str
    messages: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    resources: dict[str, int] = field(default_factory=dict)

    def take(self) -> SessionTally:
        """A copy of the counts so far, which start again from zero."""
        copy = SessionTally(self.peer, self.messages, self.accepted, self.duplicates,
                            self.rejected, dict(self.resources))
        self.messages = self.accepted = self.duplicates = self.rejected = 0
        self.resources = {}
        return copy

    def add(self, receipt: Receipt) -> None:
        self.messages += 1
        if receipt.ack_code != "AA":
            self.rejected += 1
            return
        self.accepted += 1
        self.duplicates += receipt.duplicate
        for outcome, n in receipt.outcomes.items():
            self.resources[outcome] = self.resources.get(outcome, 0) + n


class _Oversize(Exception):
    def __init__(self, head: bytes, size: int) -> None:
        super().__init__()
        self.head, self.size = head, size


class _Cut(Exception):
    def __init__(self, partial: bytes, reason: str, *, closed: bool) -> None:
        super().__init__()
        self.partial, self.reason, self.closed = partial, reason, closed


class _FrameReader:
    """Frames from a stream: skips garbage, bounds the size, notices a cut frame."""

    def __init__(self, reader: asyncio.StreamReader, limit: int, idle: float) -> None:
        self.reader, self.limit, self.idle = reader, limit, idle
        self.buffer = b""
        self.garbage = 0

    async def _more(self) -> bytes:
        data = await asyncio.wait_for(self.reader.read(READ_SIZE), self.idle)
        return data

    async def next(self) -> bytes | None:
        """The next message, None at a clean end of stream; raises _Oversize / _Cut."""
        while True:
            start = self.buffer.find(VT)
            if start >= 0:
                self.garbage += len(self.buffer[:start].strip(b"\r\n\x1c"))
                self.buffer = self.buffer[start + 1:]
                return await self._body()
            self.garbage += len(self.buffer.strip(b"\r\n\x1c"))
            self.buffer = b""
            data = await self._more()
            if not data:
                return None
            self.buffer = data

    async def _body(self) -> bytes:
        size = 0
        head = b""
        while True:
            end = self.buffer.find(FS)
            restart = self.buffer.find(VT, 0, end if end >= 0 else len(self.buffer))
            if restart >= 0:
                partial = (head + self.buffer[:restart])[: self.limit]
                self.buffer = self.buffer[restart:]
                raise _Cut(partial, "a new frame started before this one ended (no <FS><CR>)",
                           closed=False)
            if end >= 0:
                body, self.buffer = self.buffer[:end], self.buffer[end + 1:]
                if size + len(body) > self.limit:
                    raise _Oversize((head + body)[: self.limit], size + len(body))
                return head + body
            size += len(self.buffer)
            if size > self.limit:  # keep the head for the ACK and dead letter, drop the rest
                head = (head + self.buffer)[: self.limit]
            else:
                head += self.buffer
            self.buffer = b""
            data = await self._more()
            if not data:
                raise _Cut(head[: self.limit], "the connection closed inside a frame "
                                               "(truncated message, no <FS><CR>)", closed=True)
            self.buffer = data


class MllpServer:
    """Serve one node's MLLP feed (``start``, then ``serve_forever`` or ``close``)."""

    def __init__(self, node: Node, *, host: str = "127.0.0.1", port: int = 2575,
                 on_receipt: Callable[[str, Receipt], None] | None = None) -> None:
        self.node, self.host, self.port = node, host, port
        self.limit = node.settings.mllp_max_message_bytes
        self.idle = float(node.settings.mllp_idle_timeout_seconds)
        self.intake = Hl7Intake(node, durable=True)
        self.dead_letter = DeadLetter(node.folder)
        self.on_receipt = on_receipt
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="mllp-store")
        self._server: asyncio.base_events.Server | None = None
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> tuple[str, int]:
        """Listen; returns the bound (host, port) (port 0 picks a free one)."""
        self._server = await asyncio.start_server(self._connection, self.host, self.port,
                                                  limit=READ_SIZE * 2)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.port = port
        return host, port

    async def serve_forever(self) -> None:
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def close(self) -> None:
        """Stop listening, end open connections (each audited), finish the last store."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        peer = ":".join(str(p) for p in (writer.get_extra_info("peername") or ("?",))[:2])
        tally = SessionTally(peer)
        if self._slots.locked():
            log.warning("mllp: refusing %s: %d connections already open", peer, MAX_CONNECTIONS)
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        async with self._slots:
            try:
                await self._session(_FrameReader(reader, self.limit, self.idle), writer, tally)
            except TimeoutError:
                log.info("mllp: %s idle for %.0f s: closing", peer, self.idle)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            except asyncio.CancelledError:
                pass  # the server is closing: end this connection quietly (it is audited)
            finally:
                writer.close()
                self._connections.discard(task)
                if tally.messages:
                    await self._run(self._audit, tally)

    async def _session(self, frames: _FrameReader, writer: asyncio.StreamWriter,
                       tally: SessionTally) -> None:
        loop_tally = 0
        while True:
            try:
                raw = await frames.next()
            except _Oversize as big:
                error = MessageRejected(f"message is {big.size} bytes, larger than the limit "
                                        f"of {self.limit} (mllp_max_message_bytes)",
                                        code="207")
                receipt = Receipt("AR", None, error)
                await self._run(self._dead_letter, big.head, receipt, tally.peer, True)
                await self._answer(writer, build_ack(receipt, big.head), tally, receipt)
                continue
            except _Cut as cut:
                if cut.partial.strip():
                    await self._run(self._dead_letter, cut.partial,
                                    Receipt("AR", None, MessageRejected(cut.reason)),
                                    tally.peer, True)
                if cut.closed:
                    return
                continue
            if raw is None:
                return
            receipt, ack = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._process, raw, tally.peer)
            await self._answer(writer, ack, tally, receipt)
            loop_tally += 1
            if loop_tally % AUDIT_EVERY == 0:
                await self._run(self._audit, tally.take())

    async def _answer(self, writer: asyncio.StreamWriter, ack: bytes, tally: SessionTally,
                      receipt: Receipt) -> None:
        tally.add(receipt)
        if self.on_receipt is not None:
            self.on_receipt(tally.peer, receipt)
        writer.write(frame(ack))
        await writer.drain()

    async def _run(self, fn: Callable[..., object], *args: object) -> object:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- on the writer thread ----------------------------------------------------------

    def _process(self, raw: bytes, peer: str) -> tuple[Receipt, bytes]:
        try:
            receipt = self.intake.receive(raw, datetime.now(UTC))
        except Exception as exc:  # a bug: answer AE (the sender keeps the message) and log it
            log.exception("mllp: unexpected error storing a message from %s", peer)
            receipt = Receipt("AE", None, ConversionError(
                f"internal error: {type(exc).__name__}: {exc}", code=INTERNAL_ERROR))
        if receipt.ack_code != "AA":
            self._dead_letter(raw, receipt, peer, False)
        return receipt, build_ack(receipt, raw)

    def _dead_letter(self, raw: bytes, receipt: Receipt, peer: str, truncated: bool) -> None:
        error = receipt.error
        self.dead_letter.add(raw, reason=receipt.reason or "", ack_code=receipt.ack_code,
                             peer=peer, control_id=receipt.control_id,
                             code=error.code if error else None,
                             location=error.location if error else None, truncated=truncated)

    def _audit(self, tally: SessionTally) -> None:
        from healthmesh.audit import AuditRecord

        self.node.audit.append(AuditRecord(
            actor="system", action="ingest", decision="n/a", rule="admin:mllp",
            reason=f"HL7 v2 over MLLP from {tally.peer}: {tally.messages} message(s)",
            outcome="success" if not tally.rejected else "failure",
            detail={"peer": tally.peer, "messages": tally.messages, "accepted": tally.accepted,
                    "duplicates": tally.duplicates, "rejected": tally.rejected,
                    **{k: v for k, v in tally.resources.items()}},
        ))


def send(host: str, port: int, messages: list[bytes], *, timeout: float = 30.0) -> list[bytes]:
    """Send messages over one MLLP connection, each after the ACK of the one before;
    returns the ACKs (a small blocking client for scripts, tests and the CLI)."""
    import socket

    acks = []
    with socket.create_connection((host, port), timeout=timeout) as sock:
        buffer = b""
        for message in messages:
            sock.sendall(frame(message))
            while FS not in buffer:
                data = sock.recv(READ_SIZE)
                if not data:
                    raise ConnectionError("the MLLP peer closed the connection before its ACK")
                buffer += data
            end = buffer.index(FS)
            acks.append(buffer[buffer.find(VT) + 1:end])
            buffer = buffer[end + 2:]
    return acks
