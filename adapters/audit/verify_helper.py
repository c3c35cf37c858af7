"""`replay --verify` on two cores: some handlers re-run in a helper process.

Why this is sound. In a verification every handler consumes the *recorded* log only: its
own outputs are compared with their recorded copies, never fed to the other handlers (they
get the recorded copies). So each handler's decisions are a function of the log alone and
handlers can be checked in any process. The costliest one (the scanner: indicators over a
window for every symbol at every scan) runs in a forked helper while the main process reads
and decodes the log and runs the rest.

Protocol (two pipes, pickled frames, length-prefixed):

    main -> helper   [(HANDLE, index, type, json), (APPLY, ...), (CONFIG, ...), (SYNC, token)]
    helper -> main   [(index, handler, output index, type, event id bytes, json), ...]
                     (UNDECODABLE, index, type, json, why) for an event it cannot decode
                     ("sync", token) / ("end", peak RSS MB, CPU s) / ("error", traceback)

`index` is the main process's position of the event being handled, so a decision made in
the helper is placed exactly where the same handler would have made it in one process.
The main process never blocks on a full pipe without draining the other one, so neither side
can wait on the other forever; the pipes bound how far the main process runs ahead.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import pickle
import select
import struct
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from domain.errors import CatalystError

HANDLE, APPLY, CONFIG, SYNC, END = 0, 1, 2, 3, 4
UNDECODABLE = "undecodable"  # first item of a helper's output that is not a decision
_LEN = struct.Struct("<Q")
_PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)

# Output of a helper: (position decided at, handler name, index among the handler's outputs
# there, event type, event id bytes, JSON); or (UNDECODABLE, position, type, JSON, why).
Decision = tuple[int, str, int, str, bytes, bytes]


class HelperError(CatalystError):
    pass


def available() -> bool:
    """Forking is what makes a helper cheap (it starts with everything already imported and
    the plan in memory); where there is no fork, verification stays in one process."""
    return "fork" in multiprocessing.get_all_start_methods()


def _big_pipe() -> tuple[int, int]:
    r, w = os.pipe()
    with contextlib.suppress(OSError):  # larger pipes are an optimisation, not a need
        fcntl.fcntl(w, _F_SETPIPE_SZ, _PIPE_BYTES)
    return r, w


class Helper:
    """The main process's end: forwards events, collects decisions."""

    def __init__(self, child_main: Callable[[int, int], None]) -> None:
        to_r, self._to_w = _big_pipe()
        self._from_r, from_w = _big_pipe()
        ctx = multiprocessing.get_context("fork")
        self._proc = ctx.Process(target=_child, args=(child_main, to_r, from_w, self._to_w,
                                                      self._from_r), daemon=True)
        self._proc.start()
        os.close(to_r)
        os.close(from_w)
        os.set_blocking(self._to_w, False)
        os.set_blocking(self._from_r, False)
        self._batch: list[tuple[Any, ...]] = []
        self._out = bytearray()  # pickled frames not yet written
        self._in = bytearray()  # bytes read, not yet a whole frame
        self._decisions: list[Decision] = []
        self._syncs = 0
        self._synced = 0
        self.peak_rss_mb: float | None = None  # the helper's, reported as it ends
        self.cpu_seconds: float | None = None
        self.in_flight = False  # something sent since the last sync
        self.closed = False

    # --- sending -----------------------------------------------------------------------------

    def send(self, item: tuple[Any, ...]) -> None:
        self._batch.append(item)
        self.in_flight = True

    def flush(self) -> None:
        """Write what was sent, collecting decisions meanwhile (the helper may be waiting
        for us to take them): `take` returns them."""
        if self._batch:
            frame = pickle.dumps(self._batch, pickle.HIGHEST_PROTOCOL)
            self._batch = []
            self._out += _LEN.pack(len(frame))
            self._out += frame
        while self._out:
            try:
                n = os.write(self._to_w, self._out)
            except BlockingIOError:
                n = 0
            except BrokenPipeError:  # it stopped reading: its last words say why
                os.set_blocking(self._from_r, True)
                self._read()
                raise HelperError("the verification helper exited "
                                  f"(code {self._proc.exitcode})") from None
            del self._out[:n]
            if self._out:
                self._wait(write=True)
                self._read()
        self._read()

    def take(self) -> list[Decision]:
        out, self._decisions = self._decisions, []
        return out

    def sync(self) -> list[Decision]:
        """Every decision for everything sent so far."""
        self._syncs += 1
        self.send((SYNC, self._syncs))
        self.flush()
        while self._synced < self._syncs:
            self._wait(write=False)
            self._read()
        self.in_flight = False
        return self.take()

    def close(self) -> list[Decision]:
        """The last decisions; the helper exits."""
        if self.closed:
            return []
        self.send((END,))
        self.flush()
        while self.peak_rss_mb is None:
            self._wait(write=False)
            self._read()
        self._proc.join(timeout=10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout=10)
        self._shut()
        return self.take()

    def kill(self) -> None:
        if not self.closed:
            self._proc.kill()
            self._proc.join(timeout=10)
            self._shut()

    def _shut(self) -> None:
        self.closed = True
        for fd in (self._to_w, self._from_r):
            with contextlib.suppress(OSError):
                os.close(fd)

    # --- receiving ---------------------------------------------------------------------------

    def _wait(self, write: bool) -> None:
        r, w, _ = select.select([self._from_r], [self._to_w] if write else [], [], 1.0)
        if not r and not w and not self._proc.is_alive():
            self._read()  # its last words, if any
            raise HelperError(f"the verification helper exited (code {self._proc.exitcode})")

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._from_r, 1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                if self.peak_rss_mb is None:
                    self._frames()
                    if self.peak_rss_mb is None:
                        raise HelperError("the verification helper exited "
                                          f"(code {self._proc.exitcode})")
                break
            self._in += chunk
        self._frames()

    def _frames(self) -> None:
        buf = self._in
        pos = 0
        while len(buf) - pos >= _LEN.size:
            (n,) = _LEN.unpack_from(buf, pos)
            if len(buf) - pos - _LEN.size < n:
                break
            start = pos + _LEN.size
            items = pickle.loads(buf[start:start + n])
            pos = start + n
            for item in items:
                if item[0] == "sync":
                    self._synced = item[1]
                elif item[0] == "end":
                    self.peak_rss_mb, self.cpu_seconds = item[1], item[2]
                elif item[0] == "error":
                    raise HelperError(f"the verification helper failed:\n{item[1]}")
                else:
                    self._decisions.append(item)
        del buf[:pos]


# --- the helper process ----------------------------------------------------------------------


def _child(child_main: Callable[[int, int], None], fd_in: int, fd_out: int,
           parent_w: int, parent_r: int) -> None:
    os.close(parent_w)  # so that the parent's exit reads as the end of the input
    os.close(parent_r)
    try:
        child_main(fd_in, fd_out)
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
        with contextlib.suppress(OSError):
            write_frame(fd_out, [("error", traceback.format_exc())])
        os._exit(1)


def read_frames(fd: int) -> Iterable[list[tuple[Any, ...]]]:
    """Frames until the parent closes its end."""
    buf = bytearray()
    need = _LEN.size
    while True:
        while len(buf) < need:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return
            buf += chunk
        if need == _LEN.size:
            (n,) = _LEN.unpack_from(buf, 0)
            need = _LEN.size + n
            continue
        frame = pickle.loads(buf[_LEN.size:need])
        del buf[:need]
        need = _LEN.size
        yield frame


def write_frame(fd: int, items: list[Any]) -> None:
    data = pickle.dumps(items, pickle.HIGHEST_PROTOCOL)
    view = memoryview(_LEN.pack(len(data)) + data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
