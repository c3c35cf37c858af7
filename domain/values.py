"""Small value types shared by every layer. Money is Decimal; time is UTC-aware datetime."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from hashlib import sha1
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, PlainSerializer, field_validator

CENT = Decimal("0.01")

# Decimals cross the wire as strings so no binary float ever touches a price or a P&L.
# format "f": plain digits, never exponent notation (Decimal("1E+2") is written "100").
Money = Annotated[Decimal, PlainSerializer(lambda d: format(d, "f"), return_type=str,
                                           when_used="json")]
Qty = Annotated[Decimal, PlainSerializer(lambda d: format(d, "f"), return_type=str,
                                         when_used="json")]


def to_cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_EVEN)


def to_price(value: Decimal) -> Decimal:
    """Equity prices >= $1 tick in cents (Alpaca rejects sub-penny limit/stop prices)."""
    return value.quantize(CENT, rounding=ROUND_HALF_EVEN)


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    BRACKET = "bracket"


class Severity(StrEnum):
    INFO = "INFO"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


def ensure_utc(value: datetime) -> datetime:
    tz = value.tzinfo
    if tz is UTC:  # the common case (every bar and event time): astimezone would return it
        return value
    if tz is None:
        raise ValueError("datetime must carry a timezone (UTC inside the system)")
    return value.astimezone(UTC)


def derive_id(cause: UUID, label: str) -> UUID:
    """Ids of emitted events derive from their cause: a re-run emits the same ids.

    uuid5(cause, label), spelled out as uuid.uuid5 does it, without its per-call import."""
    digest = sha1(cause.bytes + label.encode(), usedforsecurity=False).digest()
    return UUID(bytes=digest[:16], version=5)


class Bar(BaseModel):
    """One OHLCV bar; `timestamp` is the bar's start (Alpaca convention), UTC."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str
    timestamp: datetime
    open: Money
    high: Money
    low: Money
    close: Money
    volume: int
    timeframe: str = "1Min"

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return ensure_utc(v)


class Headline(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    symbols: tuple[str, ...]
    headline: str
    summary: str = ""
    source: str = ""
    created_at: datetime

    @field_validator("created_at")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return ensure_utc(v)
