"""Following the log for the read model: the record stream from its first message, and the
last bar of each symbol in the market-data stream (marks), each through an ephemeral pull
consumer (no acks, in memory). A reader that fails (a server restart, a closed connection)
starts again after the last sequence it applied."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from decimal import Decimal
from typing import Any

import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from adapters.api.readmodel import Published, ReadModel
from adapters.nats.event_log import EventLog, decode_msg
from domain.errors import CatalystError

log = logging.getLogger("catalyst.api")


def _unless_cancelled() -> None:
    """nats-py turns a cancellation during a fetch on a closing connection into
    ConnectionClosedError; a reader must still end when it was cancelled (on Ctrl-C,
    asyncio.run waits for every task), not take it for a failure and retry forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def follow(model: ReadModel, event_log: EventLog) -> None:
    """Apply the record stream from its start, then every new event, forever."""
    stream = event_log.names.record
    while True:
        try:
            end = await _wait_for_stream(model, event_log, stream)
            if end <= model.record_seq:
                model.caught_up.set()
            await _pull(model, event_log, stream, ["catalyst.>"], model.record_seq + 1, end,
                        lambda m: _on_record(model, m))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the reader restarts where it stopped
            _unless_cancelled()
            model.connected = False
            log.warning("API log reader: %r; restarting at seq %d", e, model.record_seq + 1)
            await asyncio.sleep(1.0)


async def follow_marks(model: ReadModel, event_log: EventLog) -> None:
    """The last 1-minute close of each symbol (unrealized P&L of open positions)."""
    stream = event_log.names.market_data
    while True:
        try:
            await _wait_for_stream(model, event_log, stream)
            await _pull(model, event_log, stream, ["catalyst.md.bar.>"], None, 0,
                        lambda m: _on_bar(model, m))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - marks are best effort; retried
            _unless_cancelled()
            log.warning("API mark reader: %r", e)
            await asyncio.sleep(1.0)


async def _wait_for_stream(model: ReadModel, event_log: EventLog, stream: str) -> int:
    while True:
        try:
            info = await event_log.js.stream_info(stream)
            model.connected = True
            return info.state.last_seq
        except nats.js.errors.NotFoundError:
            await asyncio.sleep(0.5)  # not created yet: a run about to start


async def _pull(model: ReadModel, event_log: EventLog, stream: str, subjects: list[str],
                start_seq: int | None, end: int, on_msg: Any) -> None:
    config = ConsumerConfig(ack_policy=AckPolicy.NONE, mem_storage=True,
                            inactive_threshold=30.0)
    if start_seq is None:  # marks: the latest bar of each symbol, then new ones
        config.deliver_policy = DeliverPolicy.LAST_PER_SUBJECT
    else:
        config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = start_seq
    # The filter goes in as the subscription's subject (nats-py sets the consumer's
    # filter from it; one set in the config alone would be replaced by an empty one).
    sub = await event_log.js.pull_subscribe(subjects[0], stream=stream, config=config)
    try:
        while True:
            try:
                msgs = await sub.fetch(500, timeout=1.0)
            except nats.errors.TimeoutError:
                _unless_cancelled()
                if start_seq is not None and model.record_seq >= end:
                    model.caught_up.set()
                continue
            for msg in msgs:
                on_msg(msg)
            if start_seq is not None and model.record_seq >= end:
                model.caught_up.set()
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await event_log.js.delete_consumer(stream, config.name)


def _on_record(model: ReadModel, msg: Any) -> None:
    seq = msg.metadata.sequence.stream
    if seq <= model.record_seq:
        return
    try:
        ev = decode_msg(msg.data, msg.headers)
    except CatalystError as e:
        model.record_seq = seq
        model.published.append(Published(seq, msg.subject, "undecodable", "", {},
                                         str(e)[:300]))
        return
    model.apply(seq, msg.subject, ev)


def _on_bar(model: ReadModel, msg: Any) -> None:
    try:
        bar = json.loads(msg.data)["bar"]
        if bar.get("timeframe", "1Min") == "1Min":
            model.mark(msg.subject.rsplit(".", 1)[1], Decimal(str(bar["close"])))
    except (ValueError, KeyError, TypeError):
        return
