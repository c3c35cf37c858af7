"""The helper process of `replay --verify` (adapters.audit.verify_helper): a real forked process and
real pipes. Large frames both ways at once must not deadlock; a helper that fails or dies
is an error with its reason, never a hang."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest

from adapters.audit import verify_helper as vh
from adapters.audit.verify_helper import HANDLE, SYNC, Helper, HelperError, read_frames, write_frame

pytestmark = pytest.mark.skipif(not vh.available(), reason="needs fork")


def echo_big(fd_in: int, fd_out: int) -> None:
    """Answers every item with a decision ten times its size (the pipes fill both ways)."""
    for frame in read_frames(fd_in):
        out: list[object] = []
        for item in frame:
            if item[0] == HANDLE:
                out.append((item[1], "echo", 0, "T", b"\0" * 16, item[3] * 10))
            elif item[0] == SYNC:
                out.append(("sync", item[1]))
            elif item[0] == vh.END:
                out.append(("end", vh.peak_rss_mb(), vh.cpu_seconds()))
                write_frame(fd_out, out)
                return
        write_frame(fd_out, out)


def test_big_frames_both_ways_arrive_whole_and_in_order() -> None:
    helper = Helper(echo_big)
    got = []
    try:
        for i in range(60):  # 60 x 200 KB out, 60 x 2 MB back: far beyond the pipes
            helper.send((HANDLE, i, "T", bytes([i]) * 200_000))
            helper.flush()
            got += helper.take()
        got += helper.close()
    finally:
        helper.kill()
    assert [d[0] for d in got] == list(range(60))
    assert all(d[5] == bytes([d[0]]) * 2_000_000 for d in got)
    assert helper.peak_rss_mb and helper.peak_rss_mb > 0


def test_sync_returns_every_decision_sent_before_it() -> None:
    helper = Helper(echo_big)
    try:
        for i in range(5):
            helper.send((HANDLE, i, "T", b"x"))
        helper.flush()
        time.sleep(0.2)  # the helper answers; the next flush reads its decisions
        helper.send((HANDLE, 5, "T", b"x"))
        helper.flush()
        early = helper.take()
        assert early  # taken here, so not returned again
        assert [d[0] for d in early + helper.sync()] == list(range(6))
        assert not helper.in_flight
        helper.close()
    finally:
        helper.kill()


def failing(fd_in: int, fd_out: int) -> None:
    for _ in read_frames(fd_in):
        raise ValueError("scanner broke on bar 12")


def dies(fd_in: int, fd_out: int) -> None:
    for _ in read_frames(fd_in):
        os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize(("child", "says"), [
    (failing, "scanner broke on bar 12"),  # raises: an error with its traceback
    (dies, "exited"),  # killed: an error, not a hang
])
def test_a_helper_that_fails_is_an_error(child: Callable[[int, int], None], says: str) -> None:
    helper = Helper(child)
    try:
        helper.send((HANDLE, 1, "T", b"x"))
        with pytest.raises(HelperError, match=says):
            helper.flush()
            helper.sync()
    finally:
        helper.kill()


def test_the_reason_a_helper_failed_survives_a_broken_pipe() -> None:
    helper = Helper(failing)
    try:
        helper.send((HANDLE, 1, "T", b"x"))
        helper.flush()
        time.sleep(0.3)  # it has failed and closed its end by now
        helper.send((HANDLE, 2, "T", b"y"))
        with pytest.raises(HelperError, match="scanner broke on bar 12"):
            helper.flush()
            helper.sync()
    finally:
        helper.kill()
