"""Bulk reads and writes on nats-py's own connection, without its per-message costs.

Reading half a million events or recording a month of bars is bounded by the client, not the
server: for every message nats-py runs a regex over the control line, builds a header dict
and a `Msg`, and hops through a queue and a coroutine before our code sees it (~14 us here),
and on the way out it validates and re-encodes every header (~8 us). Both are needless for
bulk traffic whose shape we control.

- `FastLane` gives a subscription a fast lane in the protocol parser: its messages are cut
  out of the read buffer in bulk and handed to a plain callback as `RawMsg` tuples, many at
  a time. Every other operation (PING, INFO, -ERR, other subscriptions) still goes through
  nats-py's parser unchanged, so auth, TLS, reconnects and flow control stay nats-py's.
- `hpub` builds an HPUB frame for headers we make ourselves (ids, type names, numbers), so
  a whole batch can be handed to the connection as one write.

Both lean on nats-py internals (`Client._ps`, `Parser`, `Client._send_command`), checked
against the nats-py minor version pinned in pyproject.toml. `PRIVATE_API_OK` checks at import
every one of them that can be checked without a connection; the rest (the parser object's
state) are checked when a lane is installed. When any is missing, or `CATALYST_FAST_LANE=0`
is set, the lane and the frame writer stand aside and callers use nats-py's public API
(the read-path tests run both ways: tests/integration/conftest.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import nats.errors
from nats.aio.client import Client as NATS
from nats.protocol import parser as nats_parser

_HMSG = b"HMSG "
_MSG = b"MSG "
_CRLF = b"\r\n"
_STATUS_LINE = b"NATS/1.0 "  # "NATS/1.0 408 Request Timeout\r\n...": a status, no payload


def _private_api_present() -> bool:
    parser_names = ("AWAITING_CONTROL_LINE", "CRLF_SIZE", "Parser")
    client_names = ("_send_command", "_flush_pending", "_process_msg")
    return (all(hasattr(nats_parser, n) for n in parser_names)
            and callable(getattr(nats_parser.Parser, "parse", None))
            and all(callable(getattr(NATS, n, None)) for n in client_names))


PRIVATE_API_OK = _private_api_present()


def lane_enabled() -> bool:
    """Read per call, so a test (or an operator chasing a suspected client bug) can turn the
    lane off for one connection without reloading anything."""
    return PRIVATE_API_OK and os.environ.get("CATALYST_FAST_LANE", "1") != "0"


class RawMsg(NamedTuple):
    subject: bytes
    reply: bytes
    headers: bytes  # the raw header block ("NATS/1.0\r\nKey: value\r\n...\r\n"), b"" if none
    data: bytes


Lane = Callable[[list[RawMsg]], None]
# A NamedTuple's own constructor is a Python function; this is the C one (same object).
_new = tuple.__new__


def header_value(headers: bytes, key: bytes) -> bytes | None:
    """The value of `key` (given as b"\\r\\nName: ") in a raw header block, or None."""
    i = headers.find(key)
    if i < 0:
        return None
    start = i + len(key)
    return headers[start:headers.find(_CRLF, start)]


def status_of(headers: bytes) -> bytes | None:
    """The status code of a status message (b"408", b"404", b"100"...), None for a message."""
    if headers.startswith(_STATUS_LINE):
        return headers[9:12]
    return None


def hpub(subject: str, reply: str, headers: Sequence[tuple[str, str]], data: bytes) -> bytes:
    """One HPUB frame. Names and values must be plain header text (no CR/LF): ours are ids,
    type names and numbers; anything else goes through nats-py's `publish`."""
    hdr = ("NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode()
    hlen = len(hdr)
    return b"".join((f"HPUB {subject} {reply} {hlen} {hlen + len(data)}\r\n".encode()
                     if reply else f"HPUB {subject} {hlen} {hlen + len(data)}\r\n".encode(),
                     hdr, data, _CRLF))


def plain_subject(subject: str) -> bool:
    """A subject `hpub` may write as is (nats-py would validate it on publish)."""
    return bool(subject) and not any(c in subject for c in " \t\r\n")


async def send_frames(nc: NATS, frames: bytes) -> None:
    """Queue pre-built frames on the connection and let its flusher write them."""
    if nc.is_closed:
        raise nats.errors.ConnectionClosedError
    await nc._send_command(frames)
    await nc._flush_pending()


def can_send_frames(nc: NATS) -> bool:
    return lane_enabled() and hasattr(nc, "_send_command") and hasattr(nc, "_flush_pending")


class FastLane(nats_parser.Parser):
    """nats-py's parser with lanes: messages for a lane's subscription id skip the client.

    Installed by changing the class of the client's parser object in place (not replacing
    it), so a parse the read loop is in the middle of finishes on the same buffer and state.
    """

    _lanes: dict[int, Lane]

    @classmethod
    def install(cls, nc: NATS) -> FastLane | None:
        if not lane_enabled():
            return None
        ps = getattr(nc, "_ps", None)
        if isinstance(ps, FastLane):
            return ps
        if type(ps) is not nats_parser.Parser or not all(
                hasattr(ps, n) for n in ("buf", "state", "needed")):
            return None
        ps.__class__ = cls
        ps._lanes = {}
        return ps  # type: ignore[return-value]

    def open(self, sid: int, lane: Lane) -> None:
        self._lanes[sid] = lane

    def close(self, sid: int) -> None:
        self._lanes.pop(sid, None)

    async def parse(self, data: bytes = b"") -> None:
        lanes = self._lanes
        if not lanes:
            await super().parse(data)
            return
        if self.state != nats_parser.AWAITING_CONTROL_LINE:
            # nats-py is part way through a message: give it exactly the rest of that one.
            k = max(0, self.needed + nats_parser.CRLF_SIZE - len(self.buf))
            await super().parse(data[:k])
            data = data[k:]
            if self.state != nats_parser.AWAITING_CONTROL_LINE:
                return
        buf = self.buf
        buf.extend(data)
        got: dict[int, list[RawMsg]] = {}
        # One immutable copy per read: slices of bytes are single copies, of a bytearray two.
        view = bytes(buf)
        pos = 0
        n = len(view)
        while pos < n:
            eol = view.find(_CRLF, pos)
            if eol < 0:
                break
            is_h = view.startswith(_HMSG, pos)
            if is_h or view.startswith(_MSG, pos):
                parts = view[pos + (5 if is_h else 4):eol].split()
                try:
                    total = int(parts[-1])
                    sid = int(parts[1])
                except (ValueError, IndexError):
                    sid, total = -1, 0  # malformed: nats-py's parser reports it
                end = eol + 2 + total + 2
                if end > n:
                    break  # the rest of this message is still on its way
                lane_msgs = got.get(sid)
                if lane_msgs is None and sid in lanes:
                    lane_msgs = got[sid] = []
                if lane_msgs is not None:
                    body = eol + 2
                    if is_h:
                        if len(parts) == 5:
                            subject, _, reply, hlen_b, _ = parts
                        else:
                            subject, _, hlen_b, _ = parts
                            reply = b""
                        split = body + int(hlen_b)
                        lane_msgs.append(_new(RawMsg, (subject, reply, view[body:split],
                                                       view[split:end - 2])))
                    else:
                        lane_msgs.append(_new(RawMsg, (parts[0],
                                                       parts[2] if len(parts) == 4 else b"",
                                                       b"", view[body:end - 2])))
                    pos = end
                    continue
            else:
                end = eol + 2  # a control line: PING, PONG, +OK, -ERR, INFO
            # Not ours: deliver what we have so far, then this one operation through nats-py.
            self._deliver(got)
            got = {}
            buf.clear()
            buf.extend(view[pos:end])
            rest = view[end:]
            await super().parse()
            if self.buf is not buf or self.state != nats_parser.AWAITING_CONTROL_LINE:
                # The connection was reset while handling it: what followed is void.
                return
            if buf:
                # nats-py left it in the buffer (it waits for more bytes): so do we, rather
                # than hand it the same bytes again and again.
                buf.extend(rest)
                return
            buf.extend(rest)
            view = bytes(buf)
            pos, n = 0, len(view)
        if pos:
            del buf[:pos]
        self._deliver(got)

    def _deliver(self, got: dict[int, list[RawMsg]]) -> None:
        for sid, msgs in got.items():
            lane = self._lanes.get(sid)
            if lane is not None:
                lane(msgs)


async def lane_subscribe(nc: NATS, subject: str, lane: Lane) -> tuple[Any, FastLane | None]:
    """Subscribe with a fast lane when the client allows it; otherwise through a plain
    callback that hands each message to the lane as a RawMsg (same contract, slower)."""
    async def cb(msg: Any) -> None:
        lane([RawMsg(msg.subject.encode(), (msg.reply or "").encode(),
                     _raw_headers(msg), msg.data)])

    fast = FastLane.install(nc)
    # The plain callback stays as the way in for anything nats-py parses itself.
    sub = await nc.subscribe(subject, cb=cb)
    sid = getattr(sub, "_id", None)
    if fast is None or not isinstance(sid, int):
        return sub, None
    fast.open(sid, lane)
    return sub, fast


def _raw_headers(msg: Any) -> bytes:
    hdr = msg.headers
    if not hdr:
        return b""
    status = hdr.get("Status")
    first = f"NATS/1.0 {status} {hdr.get('Description', '')}".rstrip() if status else "NATS/1.0"
    lines = [first] + [f"{k}: {v}" for k, v in hdr.items() if k not in ("Status", "Description")]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
