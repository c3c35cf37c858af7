"""A nats-py client on a private asyncio loop in a background thread, and the handful of
JetStream operations the recorders need, spoken at the protocol level where nats-py has
no helper (atomic batch publish, batched direct get).

eventsourcing's recorder interface is synchronous; `NatsThread.run()` is the bridge. Every
coroutine runs on the one loop, so the recorders' caches need no locks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import threading
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from eventsourcing.persistence import (
    DatabaseError,
    DataError,
    OperationalError,
    ProgrammingError,
)
from nats.aio.client import Client as NATS
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

log = logging.getLogger("catalyst.es_jetstream")

T = TypeVar("T")

API_PREFIX = "$JS.API"
EXPECTED_STREAM = "Nats-Expected-Stream"
EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
BATCH_ID = "Nats-Batch-Id"
BATCH_SEQ = "Nats-Batch-Sequence"
BATCH_COMMIT = "Nats-Batch-Commit"

# JetStream error codes (nats-server jetstream_errors.json).
ERR_WRONG_LAST_SEQUENCE = 10071
ERR_BATCH_NOT_ENABLED = 10174
ERR_BATCH_INCOMPLETE = 10176
ERR_ATOMIC_TOO_MANY_INFLIGHT = 10210
ERR_BATCH_TOO_MANY_INFLIGHT = 10211
# Worth another go with a fresh batch id: the server shed load or dropped the batch.
RETRYABLE_BATCH_ERRORS = {ERR_BATCH_INCOMPLETE, ERR_ATOMIC_TOO_MANY_INFLIGHT,
                          ERR_BATCH_TOO_MANY_INFLIGHT}

DIRECT_GET_PAGE = 1000  # messages per batched direct get request
MAX_ATOMIC_BATCH = 1000  # nats-server's default limit on messages in one atomic batch


class WrongLastSequenceError(Exception):
    """The server refused a write: a subject's last sequence was not what we expected."""


class AtomicBatchNotEnabledError(OperationalError):
    """The stream refuses atomic batches (allow_atomic is off, or the server predates 2.12)."""


class JetStreamAPIError(DatabaseError):
    def __init__(self, code: int, err_code: int, description: str) -> None:
        super().__init__(f"JetStream error {err_code} ({code}): {description}")
        self.code = code
        self.err_code = err_code
        self.description = description


@dataclass(frozen=True)
class RawMsg:
    seq: int
    subject: str
    headers: dict[str, str]
    data: bytes


class NatsThread:
    """One NATS connection, driven by an event loop in a daemon thread."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "catalyst-es",
        timeout: float = 5.0,
        connect_options: dict[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"{name}-nats-loop", daemon=True
        )
        self._thread.start()
        options: dict[str, Any] = dict(
            servers=[u.strip() for u in url.split(",") if u.strip()],  # a cluster: a,b,c
            name=name,
            connect_timeout=timeout,
            allow_reconnect=True,
            max_reconnect_attempts=-1,  # ride out a server restart
            reconnect_time_wait=0.25,
            error_cb=_log_error,
            disconnected_cb=_log_disconnected,
            reconnected_cb=_log_reconnected,
        )
        options.update(connect_options or {})
        try:
            # wait_for: with unlimited reconnects nats-py would retry a dead URL forever.
            self.nc: NATS = self.run(asyncio.wait_for(nats.connect(**options), timeout),
                                     timeout=timeout * 2)
        except (TimeoutError, OperationalError):
            self._stop_loop()
            raise OperationalError(f"cannot connect to NATS at {url} within {timeout}s") from None
        except BaseException:
            self._stop_loop()
            raise

    @property
    def closed(self) -> bool:
        return self._closed

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the loop and wait for it (from any thread but the loop's)."""
        if self._closed:
            coro.close()
            raise OperationalError("the NATS connection of this recorder is closed")
        if threading.get_ident() == self._thread.ident:
            coro.close()
            raise ProgrammingError("recorder called from its own NATS loop thread (deadlock)")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout if timeout is not None else self.timeout * 4)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise OperationalError("NATS operation timed out") from None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if not self.nc.is_closed:
                fut = asyncio.run_coroutine_threadsafe(self._drain(), self._loop)
                fut.result(self.timeout * 2)
        except Exception:  # noqa: BLE001 - closing anyway
            log.debug("drain failed while closing", exc_info=True)
        self._stop_loop()

    async def _drain(self) -> None:
        try:
            await self.nc.drain()
        except Exception:  # noqa: BLE001
            await self.nc.close()

    def _stop_loop(self) -> None:
        self._closed = True
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=self.timeout)
        if not self._loop.is_running() and not self._loop.is_closed():
            self._loop.close()


async def _log_error(e: Exception) -> None:
    log.warning("NATS error: %r", e)


async def _log_disconnected() -> None:
    log.warning("NATS disconnected")


async def _log_reconnected() -> None:
    log.info("NATS reconnected")


def _api_error(resp: dict[str, Any]) -> JetStreamAPIError:
    err = resp["error"]
    return JetStreamAPIError(int(err.get("code", 0)), int(err.get("err_code", 0)),
                             str(err.get("description", "")))


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching ('*' one token, '>' the rest)."""
    p, s = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)


class StreamLog:
    """The JetStream operations of the recorders, on one stream (coroutines: run them on
    the NatsThread's loop)."""

    def __init__(self, conn: NatsThread, stream: str) -> None:
        self.conn = conn
        self.stream = stream
        self.timeout = conn.timeout

    @property
    def nc(self) -> NATS:
        return self.conn.nc

    # --- the stream ------------------------------------------------------------------------

    async def ensure_stream(
        self, subjects: Sequence[str], must_cover: str, *, create: bool, atomic: bool
    ) -> None:
        """Create the stream if asked and missing; switch on what the recorders need
        (direct get; atomic batches when `atomic`); check it captures our subjects."""
        js = self.nc.jetstream(timeout=self.timeout)
        try:
            info = await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            if not create:
                raise OperationalError(
                    f"stream {self.stream} does not exist (and CREATE_TABLE is off)"
                ) from None
            config = StreamConfig(
                name=self.stream,
                subjects=list(subjects),
                storage=StorageType.FILE,
                discard=DiscardPolicy.OLD,
                duplicate_window=120.0,
                deny_delete=True,
                deny_purge=True,
                allow_direct=True,
                allow_atomic=True if atomic else None,
            )
            try:
                await js.add_stream(config)
            except nats.js.errors.BadRequestError:
                pass  # created concurrently by someone else: inspect theirs below
            info = await js.stream_info(self.stream)
        config = info.config
        if not any(subject_matches(p, must_cover) for p in (config.subjects or [])):
            raise ProgrammingError(
                f"stream {self.stream} does not capture {must_cover} "
                f"(its subjects: {config.subjects})"
            )
        missing = not config.allow_direct or (atomic and not config.allow_atomic)
        if missing and create:
            config.allow_direct = True
            if atomic:
                config.allow_atomic = True
            info = await js.update_stream(config)
            log.info("enabled allow_direct/allow_atomic on stream %s", self.stream)
        if not info.config.allow_direct:
            raise OperationalError(f"stream {self.stream} needs allow_direct: true")
        if atomic and not info.config.allow_atomic:
            raise AtomicBatchNotEnabledError(
                f"stream {self.stream} does not allow atomic batch publish (needs "
                "nats-server >= 2.12 and allow_atomic: true); set CATALYST_ES_ATOMIC=false "
                "to accept non-atomic multi-event inserts"
            )

    async def enable_atomic(self) -> None:
        js = self.nc.jetstream(timeout=self.timeout)
        info = await js.stream_info(self.stream)
        if not info.config.allow_atomic:
            info.config.allow_atomic = True
            info.config.allow_direct = True
            info = await js.update_stream(info.config)
        if not info.config.allow_atomic:
            raise AtomicBatchNotEnabledError(f"server refuses allow_atomic on {self.stream}")

    # --- reading (direct get: no consumer, read-after-write on an R1 stream) ---------------

    async def last(self, subject_filter: str) -> RawMsg | None:
        """The last message whose subject matches the filter (wildcards allowed)."""
        msgs, _ = await self._direct({"last_by_subj": subject_filter})
        return msgs[0] if msgs else None

    async def page(self, subject_filter: str, start_seq: int,
                   batch: int = DIRECT_GET_PAGE) -> tuple[list[RawMsg], int | None]:
        """Up to `batch` messages matching the filter with seq >= start_seq, and how many
        more match after them (None if the server did not say)."""
        return await self._direct(
            {"seq": max(start_seq, 1), "next_by_subj": subject_filter,
             "batch": max(1, min(batch, DIRECT_GET_PAGE))}
        )

    async def read_all(self, subject_filter: str, start_seq: int = 1) -> list[RawMsg]:
        out: list[RawMsg] = []
        seq = start_seq
        while True:
            msgs, pending = await self.page(subject_filter, seq)
            out.extend(msgs)
            if not msgs or pending == 0:
                return out
            seq = msgs[-1].seq + 1

    async def _direct(self, request: dict[str, Any]) -> tuple[list[RawMsg], int | None]:
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        try:
            await self.nc.publish(f"{API_PREFIX}.DIRECT.GET.{self.stream}",
                                  json.dumps(request).encode(), reply=inbox)
            out: list[RawMsg] = []
            while True:
                try:
                    msg = await sub.next_msg(timeout=self.timeout)
                except nats.errors.TimeoutError:
                    raise OperationalError(
                        f"direct get on stream {self.stream} timed out"
                    ) from None
                headers = dict(msg.headers or {})
                status = headers.get("Status")
                if status == "404":
                    return out, 0
                if status == "204":  # end of batch
                    pending = headers.get("Nats-Num-Pending")
                    return out, int(pending) if pending is not None else None
                if status == "503":
                    raise OperationalError(
                        f"no direct get responder for stream {self.stream}: the stream is "
                        "missing or allow_direct is off"
                    )
                if status:
                    raise DatabaseError(
                        f"direct get on {self.stream} failed: {status} "
                        f"{headers.get('Description', '')}"
                    )
                out.append(RawMsg(int(headers["Nats-Sequence"]), headers["Nats-Subject"],
                                  headers, msg.data))
                if "batch" not in request or "Nats-Num-Pending" not in headers:
                    return out, None  # a single-message reply
        finally:
            with contextlib.suppress(nats.errors.Error):  # the connection may be gone
                await sub.unsubscribe()

    # --- writing ---------------------------------------------------------------------------

    async def publish(self, subject: str, data: bytes, headers: dict[str, str]) -> int:
        headers = {**headers, EXPECTED_STREAM: self.stream}
        resp = await self._request(subject, data, headers)
        return int(resp["seq"])

    async def publish_batch(self, msgs: Sequence[tuple[str, bytes, dict[str, str]]]) -> list[int]:
        """All or nothing (ADR-50 atomic batch): returns the stream sequence of each message.

        The first message is a request (the server acks the batch's start or refuses it),
        the middle ones are plain publishes, the last carries the commit and gets the PubAck.
        Retries with a fresh batch id while the server sheds load (too many batches in
        flight) or reports the batch incomplete (e.g. a reconnect dropped a message).
        """
        if len(msgs) > MAX_ATOMIC_BATCH:
            raise ProgrammingError(
                f"{len(msgs)} messages exceed the atomic batch limit of {MAX_ATOMIC_BATCH}"
            )
        delay = 0.005
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout * 2
        while True:
            try:
                return await self._publish_batch_once(msgs)
            except JetStreamAPIError as e:
                if e.err_code == ERR_BATCH_NOT_ENABLED:
                    raise AtomicBatchNotEnabledError(str(e)) from None
                if e.err_code not in RETRYABLE_BATCH_ERRORS or loop.time() > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    async def _publish_batch_once(
        self, msgs: Sequence[tuple[str, bytes, dict[str, str]]]
    ) -> list[int]:
        batch_id = uuid.uuid4().hex  # the server allows at most 64 characters
        n = len(msgs)
        for i, (subject, data, headers) in enumerate(msgs, start=1):
            h = {**headers, EXPECTED_STREAM: self.stream, BATCH_ID: batch_id,
                 BATCH_SEQ: str(i)}
            if i == n:
                h[BATCH_COMMIT] = "1"
                ack = await self._request(subject, data, h)
                last = int(ack["seq"])
                if int(ack.get("count", n)) != n:
                    raise DatabaseError(f"batch committed {ack.get('count')} of {n} messages")
                return list(range(last - n + 1, last + 1))
            if i == 1:
                await self._request(subject, data, h, empty_ok=True)
            else:
                await self.nc.publish(subject, data, headers=h)
        raise AssertionError("unreachable")

    async def _request(self, subject: str, data: bytes, headers: dict[str, str],
                       *, empty_ok: bool = False) -> dict[str, Any]:
        try:
            msg = await self.nc.request(subject, data, timeout=self.timeout, headers=headers)
        except nats.errors.NoRespondersError:
            raise OperationalError(
                f"no stream captures {subject} (is stream {self.stream} there?)"
            ) from None
        except nats.errors.TimeoutError:
            # The write may or may not have been stored: the caller must re-read.
            raise OperationalError(f"publish to {subject} timed out; outcome unknown") from None
        except nats.errors.MaxPayloadError:
            raise DataError(
                f"{len(data)} bytes on {subject} exceed the server's max_payload"
            ) from None
        except nats.errors.Error as e:  # closed, reconnecting, ...
            raise OperationalError(f"publish to {subject} failed: {e!r}") from None
        if not msg.data:
            if empty_ok:
                return {}
            raise DatabaseError(f"empty reply to a publish on {subject}")
        resp = json.loads(msg.data)
        if "error" in resp:
            err = _api_error(resp)
            if err.err_code == ERR_WRONG_LAST_SEQUENCE:
                raise WrongLastSequenceError(err.description)
            raise err
        return resp
