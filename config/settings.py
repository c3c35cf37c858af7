"""The settings models. Strict: unknown keys are errors, numbers have sane bounds.

`Settings` is frozen; a reload builds a new one and swaps it whole, so a handler never sees
half of a change.

Past ~400 lines (just): one model per YAML section, in the files' order; this module is the
schema of both files, read as one.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

ALPACA_LIVE_HOST = "api.alpaca.markets"
ALPACA_PAPER_HOST = "paper-api.alpaca.markets"


def url_host(url: str) -> str:
    """The host of `url`, lower-cased, without port or trailing dot ('' when there is none)."""
    try:
        host = urlsplit(url.strip()).hostname or ""
    except ValueError:
        return ""
    return host.rstrip(".").lower()


def url_origin(url: str) -> str:
    """'https://hooks.slack.com/services/T0/B0/xyz' -> 'https://hooks.slack.com/...': enough to
    say where something goes, nothing of the path or query (where webhook tokens live)."""
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return "..."
    scheme = f"{parts.scheme}://" if parts.scheme else ""
    host = f"[{host}]" if ":" in host else host  # IPv6
    return f"{scheme}{host}{f':{port}' if port else ''}/..." if host else "..."


def _is_alpaca_host(host: str) -> bool:
    return host == "alpaca.markets" or host.endswith(".alpaca.markets")


def _unsafe_url(field: str, message: str) -> PydanticCustomError:
    # `field` in the context lets the loader point at the key (and its env variable).
    return PydanticCustomError("unsafe_broker_url", f"{field}: {message}", {"config_field": field})


class Strict(BaseModel):
    # Inputs stay out of error text: they may hold keys or a webhook token.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    @field_validator("*", mode="before")
    @classmethod
    def _bools_and_ints_are_strict(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML `true` is not 1 and `1` is not true: a bool field takes only a bool, an int
        field only a whole number (not a bool, 5.0 or '5'), a number field never a bool.
        Pydantic's lax mode would coerce each of these silently."""
        name = info.field_name
        ann = cls.model_fields[name].annotation if name else None
        if ann is bool and not isinstance(value, bool):
            raise PydanticCustomError("strict_bool", "must be true or false")
        if ann is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise PydanticCustomError("strict_int", "must be a whole number (an integer)")
        if ann in (float, Decimal) and isinstance(value, bool):
            raise PydanticCustomError("strict_number", "must be a number, not true/false")
        return value


# --- risk_parameters.yaml -------------------------------------------------------------------


class RiskLimits(Strict):
    max_daily_loss_usd: Decimal = Field(Decimal("2000"), gt=0, le=10_000_000)
    max_positions: int = Field(5, ge=1, le=500)
    max_position_size_usd: Decimal = Field(Decimal("10000"), gt=0, le=100_000_000)
    warning_threshold_pct: float = Field(0.75, gt=0, lt=1)
    min_reward_risk: float = Field(1.5, ge=0, le=100)
    max_symbol_exposure_pct: float = Field(0.40, gt=0, le=1)


class EmergencyActions(Strict):
    close_all_positions: bool = True
    cancel_all_orders: bool = True
    halt_new_trades: bool = True
    notify_via_email: bool = True
    require_manual_restart: bool = True


class RiskParameters(Strict):
    risk_limits: RiskLimits = RiskLimits()
    emergency_actions: EmergencyActions = EmergencyActions()


# --- trading_config.yaml --------------------------------------------------------------------


class TradingSession(Strict):
    mode: Literal["autonomous", "supervised"] = "autonomous"
    auto_close_at_market_close: bool = True
    max_hold_time_minutes: int = Field(180, ge=1, le=24 * 60)
    stop_new_entries_minutes_before_close: int = Field(15, ge=0, le=390)
    flatten_minutes_before_close: int = Field(5, ge=1, le=390)


class Universe(Strict):
    min_price: Decimal = Field(Decimal("5"), ge=0)
    max_price: Decimal = Field(Decimal("500"), gt=0)
    min_avg_daily_volume: int = Field(1_000_000, ge=0)

    @model_validator(mode="after")
    def _range(self) -> Universe:
        if self.min_price >= self.max_price:
            raise ValueError("min_price must be below max_price")
        return self


class ScoringWeights(Strict):
    catalyst: float = Field(0.3, ge=0, le=1)
    momentum: float = Field(0.2, ge=0, le=1)
    volume: float = Field(0.2, ge=0, le=1)
    technical: float = Field(0.3, ge=0, le=1)

    @model_validator(mode="after")
    def _sum(self) -> ScoringWeights:
        total = self.catalyst + self.momentum + self.volume + self.technical
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"weights must sum to 1.0 (they sum to {total:g})")
        return self


class Workflow(Strict):
    scan_frequency_minutes: int = Field(30, ge=1, le=390)
    execute_top_n: int = Field(3, ge=0, le=100)
    min_composite_score: float = Field(0.0, ge=0, le=1)
    universe: Universe = Universe()
    weights: ScoringWeights = ScoringWeights()
    climax_volume_ratio: float = Field(5.0, gt=1, le=100)
    climax_penalty: float = Field(0.2, ge=0, le=1)
    news_half_life_hours: float = Field(6.0, gt=0, le=24 * 30)


class OrderExecution(Strict):
    use_bracket_orders: bool = True
    bracket_stop_loss_atr: float = Field(2.0, gt=0, le=20)
    bracket_take_profit_atr: float = Field(3.0, gt=0, le=50)
    # Entries are marketable limit orders at last price x (1 +/- this), sized against the
    # limit, so max_position_size_usd holds at the fill (docs/execution.md).
    entry_limit_slippage_pct: float = Field(0.01, ge=0, le=0.2)


class SimBroker(Strict):
    starting_cash: Decimal = Field(Decimal("100000"), gt=0)
    commission_per_share: Decimal = Field(Decimal("0"), ge=0)
    slippage_bps: Decimal = Field(Decimal("0"), ge=0, le=1000)


class Broker(Strict):
    kind: Literal["auto", "sim", "alpaca"] = "auto"
    mode: Literal["paper", "live"] = "paper"
    api_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    paper_url: str = "https://paper-api.alpaca.markets"
    live_url: str = "https://api.alpaca.markets"
    stream_url: str | None = None
    timeout_seconds: float = Field(10.0, gt=0, le=120)
    max_retries: int = Field(5, ge=0, le=20)
    sim: SimBroker = SimBroker()

    @model_validator(mode="after")
    def _paper_is_not_live(self) -> Broker:
        """Refuse a paper_url that is the live host (orders would hit real money under a
        "paper" banner, without --live), and a live mode pointed at the paper host."""
        for name in ("paper_url", "live_url"):
            url = getattr(self, name)
            if not url.strip().lower().startswith(("http://", "https://")) or not url_host(url):
                raise _unsafe_url(name, f"{url!r} is not an http(s) URL with a host")
        paper, live = url_host(self.paper_url), url_host(self.live_url)
        if paper == ALPACA_LIVE_HOST:
            raise _unsafe_url(
                "paper_url",
                f"{paper!r} is the LIVE trading host; paper trading must not reach the live "
                f"account (ALPACA_BASE_URL sets paper_url: use {ALPACA_PAPER_HOST}; the live "
                "host belongs in live_url, with mode: live and --live)",
            )
        if live == ALPACA_PAPER_HOST and (self.mode == "live" or paper == live):
            raise _unsafe_url(
                "live_url",
                f"{live!r} is the paper host; live_url must be the live host "
                f"{ALPACA_LIVE_HOST} (and differ from paper_url)",
            )
        stream = url_host(self.stream_url) if self.stream_url else None
        if self.mode == "paper" and stream == ALPACA_LIVE_HOST:
            raise _unsafe_url(
                "stream_url",
                f"{stream!r} is the LIVE host; in paper mode the order-update stream must be "
                f"the paper one ({ALPACA_PAPER_HOST}, or unset to derive it from paper_url)",
            )
        if paper == live and _is_alpaca_host(paper):
            raise _unsafe_url(
                "paper_url",
                f"paper_url and live_url are the same Alpaca host {paper!r}; paper trading "
                f"must not share the live host (use {ALPACA_PAPER_HOST})",
            )
        return self

    @property
    def has_keys(self) -> bool:
        return bool(self.api_key and self.secret_key)

    @property
    def effective_kind(self) -> Literal["sim", "alpaca"]:
        if self.kind == "auto":
            return "alpaca" if self.has_keys else "sim"
        return self.kind


class MarketData(Strict):
    source: Literal["auto", "bundled", "alpaca"] = "auto"
    feed: Literal["iex", "sip"] = "iex"
    data_url: str | None = None
    stream_url: str | None = None
    symbols: tuple[str, ...] = ()
    dataset_dir: Path | None = None  # None: the bundled dataset shipped in the package

    @field_validator("symbols")
    @classmethod
    def _upper(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(s.strip().upper() for s in v)


class Smtp(Strict):
    host: str | None = None
    port: int = Field(587, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    from_addr: str = "catalyst-alerts@localhost"
    # None: STARTTLS required when a username is set, opportunistic without (SMTP_SECURITY)
    security: Literal["starttls", "tls", "none"] | None = None
    timeout_seconds: float = Field(10.0, gt=0, le=300)

    @property
    def effective_security(self) -> Literal["starttls", "tls", "none", "opportunistic"]:
        if self.security is not None:
            return self.security
        return "starttls" if self.username else "opportunistic"


class Recipients(Strict):
    critical: tuple[str, ...] = ("trader@localhost",)
    warning: tuple[str, ...] = ("trader@localhost",)
    info: tuple[str, ...] = ("trader@localhost",)


class Webhook(Strict):
    # Slack/Discord-style URLs carry the token in the path: a secret, unwrapped only for the
    # POST. Anything recorded or shown uses `display_url` (scheme and host).
    url: SecretStr
    timeout_seconds: float = Field(5.0, gt=0, le=60)
    min_severity: Literal["INFO", "WARNING", "CRITICAL"] = "INFO"

    @field_validator("url")
    @classmethod
    def _http(cls, v: SecretStr) -> SecretStr:
        url = v.get_secret_value().strip()
        if not url.lower().startswith(("http://", "https://")) or not url_host(url):
            # Not the value in the message: it may hold the token.
            raise ValueError("must be an http(s) URL with a host")
        return SecretStr(url)

    @property
    def display_url(self) -> str:
        return url_origin(self.url.get_secret_value())


class Alerts(Strict):
    enabled: bool = True
    channels: tuple[Literal["mailbox", "smtp", "webhook"], ...] = ("mailbox",)
    # Third-party channels by entry point name (group `catalyst.alert_channels`).
    extra_channels: tuple[str, ...] = ()
    mailbox_dir: Path = Path("var/mail")
    smtp: Smtp = Smtp()
    recipients: Recipients = Recipients()
    webhook: Webhook | None = None
    cooldown_minutes: int = Field(15, ge=0, le=24 * 60)
    hourly_cap: int = Field(20, ge=1, le=10_000)
    retry_max_seconds: float = Field(300.0, gt=0, le=24 * 3600)


class NatsTls(Strict):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


def _server_url(value: str) -> str:
    """One server URL: nats:// or tls:// with a host (what nats-py and a cluster take)."""
    url = value.strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("nats", "tls", "ws", "wss") or not parts.hostname:
        # The URL may carry user:password@: shown without it.
        scheme, sep, rest = url.rpartition("://") if "://" in url else ("", "", url)
        shown = scheme + sep + rest.rpartition("@")[2]
        raise PydanticCustomError(
            "nats_server_url",
            "'{shown}' is not a NATS server URL (nats://, tls://, ws:// or wss://host[:port])",
            {"shown": shown})
    return url


class Nats(Strict):
    # One server, or several comma-separated (CATALYST_NATS_URL=nats://a:4222,nats://b:4222):
    # a shortcut for `servers`. Both unset: start an embedded nats-server.
    url: str | None = None
    servers: tuple[str, ...] = ()  # the cluster's URLs; the client fails over between them
    # Stream replicas when a stream is created (1: the embedded server; 3 on a cluster). A
    # later start never lowers an existing stream's replicas; a higher value scales it up.
    replicas: int = Field(1, ge=1, le=5)
    # Connecting, creating streams and consumers, and JetStream API calls retry through
    # leader elections and node restarts for this long, then fail with a clear error.
    retry_timeout_seconds: float = Field(120, gt=0, le=3600)
    # `catalyst serve`: how long a stateful role's lease outlives its holder's last renewal
    # (the failover time after a kill). Shorter than a leader election (4-9 s), a node loss
    # can move a role too: safe (writes are fenced), but a failover.
    lease_ttl_seconds: float = Field(3.0, ge=0.5, le=300)
    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    creds_file: Path | None = None
    tls: NatsTls | None = None
    store_dir: Path = Path("var/nats")
    record_stream: str = "CATALYST"
    market_data_stream: str = "CATALYST_MD"
    duplicate_window_seconds: int = Field(120, ge=1, le=7 * 24 * 3600)
    market_data_max_age_days: int = Field(30, ge=1, le=3650)

    @field_validator("url")
    @classmethod
    def _urls(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        return ",".join(_server_url(u) for u in v.split(",") if u.strip())

    @field_validator("servers", mode="before")
    @classmethod
    def _server_list(cls, v: object) -> object:
        if isinstance(v, str):  # "nats://a:4222,nats://b:4222" in YAML is a list too
            v = [u for u in v.split(",") if u.strip()]
        if isinstance(v, (list, tuple)):
            return tuple(_server_url(u) if isinstance(u, str) else u for u in v)
        return v

    @model_validator(mode="after")
    def _one_way(self) -> Nats:
        if self.url and self.servers:
            raise PydanticCustomError(
                "nats_servers", "servers: give nats.url or nats.servers, not both",
                {"config_field": "servers"})
        return self

    @property
    def server_urls(self) -> tuple[str, ...]:
        """The configured servers ((): the embedded one)."""
        return tuple(self.url.split(",")) if self.url else self.servers


class Logging(Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    format: Literal["text", "json"] = "text"


class TradingConfig(Strict):
    trading_session: TradingSession = TradingSession()
    workflow: Workflow = Workflow()
    order_execution: OrderExecution = OrderExecution()
    broker: Broker = Broker()
    market_data: MarketData = MarketData()
    alerts: Alerts = Alerts()
    nats: Nats = Nats()
    logging: Logging = Logging()


class Settings(Strict):
    """Everything in force: risk_parameters.yaml + trading_config.yaml + environment."""

    risk: RiskParameters = RiskParameters()
    trading: TradingConfig = TradingConfig()

    # Short names the handlers use.
    @property
    def limits(self) -> RiskLimits:
        return self.risk.risk_limits

    @property
    def emergency(self) -> EmergencyActions:
        return self.risk.emergency_actions

    @property
    def session(self) -> TradingSession:
        return self.trading.trading_session

    @property
    def workflow(self) -> Workflow:
        return self.trading.workflow

    @property
    def execution(self) -> OrderExecution:
        return self.trading.order_execution
