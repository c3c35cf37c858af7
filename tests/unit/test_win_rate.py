"""One win rate (issue 16): the CLI said 59 % and the daily email 62 % for the same day."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from domain.pnl import win_rate


def test_win_rate_counts_break_even_trades_as_not_won() -> None:
    assert win_rate(0, 0) is None
    assert win_rate(16, 27) == 16 / 27  # 59 %, with 1 break-even among 27 (16 won, 10 lost)
    assert win_rate(3, 3) == 1.0


def test_the_run_summary_and_the_daily_email_use_the_same_win_rate() -> None:
    from rich.console import Console

    from adapters.runtime.app import RunSummary, print_summary
    from domain.events import SessionEnded
    from handlers.alerter import Alerter  # noqa: F401 - the email side imports it too
    from tests.unit.test_alerter import make, only, run, session_started, settings

    summary = RunSummary("sim-x", None, "sim", [date(2025, 11, 25)], trades=27, wins=16,
                         losses=10)
    console = Console(width=120, record=True)
    print_summary(summary, console)
    assert "16 / 10 (59%)" in console.export_text()

    ended = make(SessionEnded, 390, session_id="s1", session_date=date(2025, 11, 25),
                 trades=27, wins=16, losses=10, realized_pnl=Decimal("1.00"))
    alerter = Alerter()
    run(alerter, [session_started()], settings(cooldown=0))
    alert = only(run(alerter, [ended]))
    assert alert.context["win_rate"] == win_rate(16, 27)
