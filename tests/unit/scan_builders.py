"""Builders for hand-made bars, headlines and scan events (tests of the scan stages)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from uuid import UUID, uuid5

from config.settings import OrderExecution, Settings, TradingConfig, Workflow
from domain.events import (
    BarReceived,
    NewsReceived,
    ScanRequested,
    SessionStarted,
)
from domain.values import Bar, Headline

# 2024-03-04 09:30 America/New_York (EST, UTC-5).
OPEN = datetime(2024, 3, 4, 14, 30, tzinfo=UTC)
NS = UUID("00000000-0000-0000-0000-00000000c0de")
SESSION = "2024-03-04"


def D(x: object) -> Decimal:
    return Decimal(str(x))


def eid(label: str) -> UUID:
    return uuid5(NS, label)


def bar(
    close: object, *, high: object = None, low: object = None, open_: object = None,
    volume: int = 1000, i: int = 0, symbol: str = "AAA", timeframe: str = "1Min",
    start: datetime = OPEN,
) -> Bar:
    step = timedelta(days=1) if timeframe == "1Day" else timedelta(minutes=1)
    c = D(close)
    return Bar(
        symbol=symbol, timestamp=start + i * step, open=D(open_) if open_ is not None else c,
        high=D(high) if high is not None else c, low=D(low) if low is not None else c,
        close=c, volume=volume, timeframe=timeframe,
    )


def hlc(rows: Sequence[tuple[object, object, object]], **kw: object) -> list[Bar]:
    """Bars from (high, low, close) rows, one minute apart."""
    return [bar(c, high=h, low=lo, i=i, **kw) for i, (h, lo, c) in enumerate(rows)]  # type: ignore[arg-type]


def closes(values: Sequence[object], *, spread: object = "0", volumes: Sequence[int] | None = None,
           **kw: object) -> list[Bar]:
    """Bars from closes, high/low = close +/- spread."""
    s = D(spread)
    return [
        bar(D(c), high=D(c) + s, low=D(c) - s, i=i,
            volume=volumes[i] if volumes is not None else 1000, **kw)  # type: ignore[arg-type]
        for i, c in enumerate(values)
    ]


def headline(text: str, created_at: datetime, *, id: str | None = None,
             symbols: tuple[str, ...] = ("AAA",), summary: str = "") -> Headline:
    return Headline(id=id or text, symbols=symbols, headline=text, summary=summary,
                    created_at=created_at)


def bar_event(b: Bar) -> BarReceived:
    return BarReceived(
        event_id=eid(f"bar:{b.symbol}:{b.timeframe}:{b.timestamp.isoformat()}:{b.close}"),
        occurred_at=b.timestamp, correlation_id="md", symbol=b.symbol, bar=b,
    )


def news_event(h: Headline, symbol: str = "AAA") -> NewsReceived:
    return NewsReceived(
        event_id=eid(f"news:{symbol}:{h.id}:{h.headline}"), occurred_at=h.created_at,
        correlation_id="md", symbol=symbol, headline=h,
    )


def scan_requested(at: datetime, number: int = 1, session_id: str = SESSION) -> ScanRequested:
    return ScanRequested(
        event_id=eid(f"scan:{session_id}:{number}"), occurred_at=at, correlation_id=session_id,
        session_id=session_id, scan_number=number,
    )


def session_started(session_id: str = SESSION, at: datetime = OPEN) -> SessionStarted:
    return SessionStarted(
        event_id=eid(f"session:{session_id}"), occurred_at=at, correlation_id=session_id,
        session_id=session_id, session_date=date.fromisoformat(session_id[:10]),
        mode="autonomous", broker="sim", market_open=at, market_close=at + timedelta(hours=6.5),
    )


def make_settings(execution: dict[str, object] | None = None, **workflow: object) -> Settings:
    return Settings(
        trading=TradingConfig(
            workflow=Workflow(**workflow),  # type: ignore[arg-type]
            order_execution=OrderExecution(**(execution or {})),  # type: ignore[arg-type]
        )
    )
