"""Small value types shared by every layer. Money is Decimal; time is UTC-aware datetime."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from hashlib import sha1
from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainSerializer,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

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


class _UtcSchema:
    """Validation of `UtcDatetime`: any aware time is converted to UTC by `ensure_utc`, a
    naive one is refused. From JSON, a time written with offset 0 ("Z", "+00:00") passes
    natively (no Python call: this runs for every event and bar decoded from the log, twice
    per bar); it is a fixed offset, unlike a Python zone that is at +0 only in winter."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler
                                     ) -> core_schema.CoreSchema:
        converting = core_schema.no_info_after_validator_function(
            ensure_utc, core_schema.datetime_schema())
        return core_schema.json_or_python_schema(
            json_schema=cls._json(converting), python_schema=converting)

    @staticmethod
    def _json(converting: core_schema.CoreSchema) -> core_schema.CoreSchema:
        return core_schema.union_schema(
            [core_schema.datetime_schema(tz_constraint=0), converting],
            mode="left_to_right",
            # One error at the field (not one per branch, located inside the union).
            custom_error_type="utc_datetime",
            custom_error_message="Input should be a date and time with a timezone, "
                                 "e.g. 2025-06-02T14:30:00Z (times are UTC inside Catalyst)")

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return handler(core_schema.datetime_schema())


UtcDatetime = Annotated[datetime, _UtcSchema]


def derive_id(cause: UUID, label: str) -> UUID:
    """Ids of emitted events derive from their cause: a re-run emits the same ids.

    uuid5(cause, label), spelled out as uuid.uuid5 does it, without its per-call import."""
    digest = sha1(cause.bytes + label.encode(), usedforsecurity=False).digest()
    return UUID(bytes=digest[:16], version=5)


class Bar(BaseModel):
    """One OHLCV bar; `timestamp` is the bar's start (Alpaca convention), UTC."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str
    timestamp: UtcDatetime
    open: Money
    high: Money
    low: Money
    close: Money
    volume: int
    timeframe: str = "1Min"


class Headline(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    symbols: tuple[str, ...]
    headline: str
    summary: str = ""
    source: str = ""
    created_at: UtcDatetime
