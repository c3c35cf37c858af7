"""Commands into a running system: a request to its sequencer, answered once recorded.

A person's act (`catalyst session start`, `resume`, a POST to the API) is an input like a
bar. Published straight to the log it is dispatched wherever it happens to land among the
runtime's own writes; sent here, the running sequencer records it itself, stamped with its
dispatch position, so `replay --verify` re-runs it exactly where it was decided.

The subject is a core NATS request subject outside every stream (nothing is stored unless
the sequencer records it). No responder means no running real-time system: the command is
refused with a clear error (published to the log instead, the next start would take it as
history and nobody would decide it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import nats.errors

from adapters.nats.event_log import EventLog, decode_msg, encode
from domain.errors import CatalystError
from domain.events import Event, EventDecodeError

log = logging.getLogger("catalyst.inbox")

INBOX_SUBJECT = "catalyst.inbox"


def inbox_subject(event_log: EventLog) -> str:
    """Per log (its record stream's name), so systems sharing a server never answer for
    each other."""
    return f"{event_log.subject_prefix}{INBOX_SUBJECT}.{event_log.names.record}"


class InboxRefused(CatalystError):
    """The running system answered, and did not take the event (the reason is its)."""


class NoSystemListening(CatalystError):
    """No running real-time system answers the inbox."""


async def serve_inbox(event_log: EventLog,
                      submit: Callable[[Sequence[Event]], Awaitable[None]]) -> Any:
    """Answer requests on the inbox subject by submitting each event; returns the
    subscription (unsubscribe to stop)."""

    async def on_request(msg: Any) -> None:
        try:
            event = decode_msg(msg.data, msg.headers)
        except EventDecodeError as e:
            await msg.respond(json.dumps({"ok": False, "error": str(e)}).encode())
            return
        try:
            await submit([event])
        except Exception as e:  # noqa: BLE001 - answered to the sender, who reports it
            log.error("inbox: could not record %s %s: %r", event.type, event.event_id, e)
            await msg.respond(json.dumps({"ok": False, "error": repr(e)}).encode())
            return
        await msg.respond(json.dumps({"ok": True, "event_id": str(event.event_id)}).encode())

    return await event_log.nc.subscribe(inbox_subject(event_log), cb=on_request)


async def send_to_inbox(event_log: EventLog, event: Event, timeout: float = 15.0) -> bool:
    """True once the running sequencer recorded `event`; False when none is listening."""
    _, data, headers = encode(event)
    try:
        reply = await event_log.nc.request(inbox_subject(event_log), data, timeout=timeout,
                                           headers=headers)
    except nats.errors.NoRespondersError:
        return False
    answer = json.loads(reply.data or b"{}")
    if not answer.get("ok"):
        raise InboxRefused(f"the running system refused {event.type}: {answer.get('error')}")
    return True


async def submit_command(event_log: EventLog, event: Event) -> None:
    """Through the running sequencer, recorded once this returns. With none answering it is
    refused, not published: a request in the log that no running system took would be read
    by the next start as history, decided by nobody."""
    if not await send_to_inbox(event_log, event):
        raise NoSystemListening(
            f"no running Catalyst answered: {event.type} was not recorded. Start `catalyst "
            "run` (or the session role: `catalyst serve --role session`) and send it again")
