"""Generate the bundled SYNTHETIC dataset (seeded, byte-for-byte reproducible).

    python -m adapters.market_data.generate_dataset [--seed N] [--start YYYY-MM-DD] [--out DIR]

Writes bars_1min.csv, bars_1day.csv, news.jsonl and README.md into `adapters/data/bundled/`
(or --out). The prices are invented: a one-factor market model with GARCH(1,1) volatility
clustering, U-shaped intraday volatility and volume, overnight gaps, scripted catalyst
days (headline + gap + volume surge + trend) and one broad selloff day.

The three intraday sessions are real NYSE sessions (checked with exchange-calendars): by
default Tue 2025-11-25, Wed 2025-11-26 and the half-day Fri 2025-11-28 (13:00 close) after
Thanksgiving, preceded by 40 daily bars. Roles: day 1 catalysts, day 2 the selloff, day 3
a thin half-day rebound.

Past ~400 lines: one seeded generator. Its random draws happen in one fixed order across
history, headlines and sessions; that order is what makes the bundled files reproducible
byte for byte, and it is easiest to keep when the whole generator reads top to bottom.
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

from adapters.market_data import calendar
from adapters.market_data.bundled import BUNDLED_DIR
from adapters.market_data.dataset import (
    BARS_1DAY,
    BARS_1MIN,
    NEWS_FILE,
    write_bars_csv,
    write_news_jsonl,
)
from domain.values import Bar, Headline

DEFAULT_SEED = 20251125
DEFAULT_START = date(2025, 11, 25)
HISTORY_SESSIONS = 40
SOURCE = "Synthetic Wire"
SYNTHETIC_NOTE = " (Synthetic headline generated for the Catalyst demo dataset.)"

# The selloff: a macro headline at 14:01 New York, every symbol gaps down on the next bar.
# 14:01 because the 14:00 scan's entries fill at the 14:01 open: the demo's book is then
# caught by the gap, which is what shows the emergency stop.
SHOCK_AT = time(14, 1)
# The 14:02 print is at least this far below the lowest price of the morning, for every
# symbol, so any long book of four or more $10,000 positions loses > $2,000 even if each
# position had a protective stop (a stop cannot fill inside a gap).
SHOCK_MIN_DROP = 0.08


@dataclass(frozen=True)
class Profile:
    price: float  # last close before the intraday sessions (the history walks up to it)
    adv: int  # average daily volume, shares (consolidated)
    vol: float  # daily return volatility
    beta: float  # to the market factor


PROFILES: dict[str, Profile] = {
    "AAPL": Profile(275.0, 52_000_000, 0.015, 1.0),
    "MSFT": Profile(475.0, 21_000_000, 0.014, 1.0),
    "NVDA": Profile(180.0, 170_000_000, 0.028, 1.6),
    "AMD": Profile(210.0, 55_000_000, 0.032, 1.7),
    "TSLA": Profile(415.0, 95_000_000, 0.035, 1.8),
    "AMZN": Profile(225.0, 45_000_000, 0.019, 1.2),
    "META": Profile(615.0, 12_000_000, 0.020, 1.2),  # above the $500 universe bound
    "GOOGL": Profile(315.0, 35_000_000, 0.018, 1.1),
    "NFLX": Profile(105.0, 35_000_000, 0.022, 1.1),
    "JPM": Profile(305.0, 9_000_000, 0.013, 0.9),
    "BAC": Profile(52.0, 38_000_000, 0.015, 1.0),
    "XOM": Profile(117.0, 15_000_000, 0.013, 0.6),
    "PFE": Profile(25.5, 40_000_000, 0.015, 0.5),
    "MRNA": Profile(24.5, 12_000_000, 0.040, 1.0),
    "BA": Profile(190.0, 8_000_000, 0.022, 1.2),
    "DIS": Profile(110.0, 9_000_000, 0.015, 0.9),
    "INTC": Profile(35.0, 95_000_000, 0.035, 1.4),
    "COIN": Profile(255.0, 10_000_000, 0.042, 2.1),
    "PLTR": Profile(165.0, 60_000_000, 0.040, 2.0),
    "SOFI": Profile(27.0, 75_000_000, 0.040, 1.9),
}
SYMBOLS = tuple(PROFILES)
MARKET_VOL = 0.010  # daily volatility of the market factor


@dataclass(frozen=True)
class Catalyst:
    symbol: str
    day: int  # index of the intraday session (0, 1, 2)
    gap: float  # overnight log-return added to the open
    trend: float  # log-return added over the session, front-loaded
    volume_x: float  # volume multiplier at the peak
    published: time  # New York time of the headline
    headline: str
    summary: str
    at_minute: int = 0  # minute of the session the move starts (0: at the open)


INTRADAY_CATALYSTS = (
    Catalyst("MRNA", 0, 0.105, 0.045, 5.0, time(7, 5),
             "Moderna wins FDA approval for next-generation combination vaccine",
             "Approval arrives ahead of schedule; analysts raise peak-sales estimates."),
    Catalyst("PLTR", 0, 0.062, 0.025, 3.0, time(6, 30),
             "Palantir awarded multi-year U.S. Army enterprise software contract",
             "The agreement consolidates dozens of existing contracts into one award."),
    Catalyst("BA", 0, -0.055, -0.020, 3.5, time(8, 10),
             "FAA pauses Boeing 737 MAX production increase after new inspection findings",
             "Regulator cites quality-control lapses; deliveries guidance under review."),
    Catalyst("NVDA", 0, 0.0, 0.030, 4.0, time(11, 15),
             "Nvidia unveils next-generation AI accelerator, cites sold-out supply",
             "Management says demand exceeds supply through the next fiscal year.",
             at_minute=105),
    Catalyst("COIN", 1, 0.048, 0.010, 2.5, time(7, 30),
             "Bitcoin jumps above $110,000 as spot ETF inflows accelerate",
             "Trading volumes on major crypto exchanges hit a three-month high."),
    Catalyst("AMZN", 2, 0.038, 0.012, 2.5, time(8, 0),
             "Amazon reports record Black Friday online sales in early tallies",
             "Early data show online spending up double digits from last year."),
)

SHOCK_HEADLINE = (
    "Stocks tumble as surprise Fed minutes flag emergency rate-hike risk",
    "Minutes show officials discussed an unscheduled hike as inflation re-accelerates; "
    "Treasury yields spike and megacaps lead a broad selloff.",
    ("AAPL", "MSFT", "NVDA", "AMZN", "META", "GOOGL", "TSLA", "JPM", "BAC"),
)

HISTORY_HEADLINES = {
    1: [
        "{name} beats quarterly estimates and raises full-year guidance",
        "{name} announces $10 billion share buyback",
        "{name} upgraded to Buy at major broker on margin outlook",
        "{name} signs strategic partnership with cloud provider",
    ],
    -1: [
        "{name} cuts guidance citing weaker demand",
        "{name} downgraded to Sell as competition intensifies",
        "{name} shares slide after CFO departure",
        "{name} faces regulatory probe into sales practices",
    ],
}
ROUTINE_HEADLINES = [
    "{name} to present at upcoming industry conference",
    "{name} declares regular quarterly dividend",
    "Analyst reiterates Hold rating on {name}",
    "{name} names new head of investor relations",
    "{name} options activity picks up ahead of product event",
    "{name} files routine 8-K on board committee changes",
]
NAMES = {
    "AAPL": "Apple", "MSFT": "Microsoft", "NVDA": "Nvidia", "AMD": "AMD", "TSLA": "Tesla",
    "AMZN": "Amazon", "META": "Meta Platforms", "GOOGL": "Alphabet", "NFLX": "Netflix",
    "JPM": "JPMorgan Chase", "BAC": "Bank of America", "XOM": "Exxon Mobil", "PFE": "Pfizer",
    "MRNA": "Moderna", "BA": "Boeing", "DIS": "Disney", "INTC": "Intel", "COIN": "Coinbase",
    "PLTR": "Palantir", "SOFI": "SoFi Technologies",
}


# --- helpers --------------------------------------------------------------------------------


def cents(x: float) -> Decimal:
    return Decimal(f"{max(x, 0.01):.2f}")


def ny(d: date, t: time) -> datetime:
    return datetime.combine(d, t, tzinfo=calendar.NEW_YORK).astimezone(UTC)


def daily_stamp(d: date) -> datetime:
    """Daily bars are stamped at midnight New York of the session date (Alpaca's way)."""
    return calendar.ny_midnight(d)


def vol_shape(i: int, n: int) -> float:
    """Intraday volatility by minute i of an n-minute session: high after the open, a
    smaller lift into the close (a half-day closes like a full one)."""
    return 0.6 + 2.2 * math.exp(-i / 30) + 0.5 * math.exp(-(n - 1 - i) / 25)


def volume_shape(i: int, n: int) -> float:
    """The U-shaped intraday volume profile (about 16% in the first half hour, 13% in the
    last, 5-6% per half hour at midday)."""
    return 0.55 + 1.6 * math.exp(-i / 35) + 1.4 * math.exp(-(n - 1 - i) / 25)


FULL_DAY = 390
_VOL_NORM = math.sqrt(sum(vol_shape(i, FULL_DAY) ** 2 for i in range(FULL_DAY)) / FULL_DAY)
_VOLUME_SUM = sum(volume_shape(i, FULL_DAY) for i in range(FULL_DAY))


class Garch:
    """GARCH(1,1) with unit unconditional variance: shocks cluster."""

    def __init__(self, rng: random.Random, alpha: float = 0.08, beta: float = 0.90) -> None:
        self.rng, self.alpha, self.beta = rng, alpha, beta
        self.omega = 1 - alpha - beta
        self.h = 1.0

    def draw(self) -> float:
        z = math.sqrt(self.h) * self.rng.gauss(0, 1)
        self.h = self.omega + self.alpha * z * z + self.beta * self.h
        return z


@dataclass
class SymbolState:
    symbol: str
    profile: Profile
    rng: random.Random
    price: float
    garch: Garch
    minute_bars: list[Bar] = field(default_factory=list)
    daily_bars: list[Bar] = field(default_factory=list)

    @property
    def idio_vol(self) -> float:
        p = self.profile
        return math.sqrt(max(p.vol**2 - (p.beta * MARKET_VOL) ** 2, (0.3 * p.vol) ** 2))


def _ohlc(rng: random.Random, open_: float, close: float, spread: float) -> tuple[Decimal, ...]:
    hi = max(open_, close) * math.exp(abs(rng.gauss(0, spread)))
    lo = min(open_, close) * math.exp(-abs(rng.gauss(0, spread)))
    o, c, h, lo_ = cents(open_), cents(close), cents(hi), cents(lo)
    return o, max(h, o, c), min(lo_, o, c), c


# --- daily history --------------------------------------------------------------------------


def _history(
    states: list[SymbolState], sessions: list[date], market_rng: random.Random,
    news: list[Headline], seed: int,
) -> None:
    """Daily bars before the intraday sessions. Returns are drawn first; the path is then
    anchored so the last close lands on the profile's price (realistic levels, and the
    universe bounds keep meaning what the README says)."""
    market = Garch(market_rng, alpha=0.10, beta=0.85)
    market_moves = [MARKET_VOL * market.draw() for _ in sessions]
    for st in states:
        p, rng = st.profile, st.rng
        # One or two catalyst days per symbol, never in the last 3 sessions.
        catalyst_days = set(rng.sample(range(2, len(sessions) - 3), k=rng.choice((1, 1, 2))))
        routine_days = set(rng.sample(range(len(sessions)), k=rng.randint(3, 6)))
        moves: list[tuple[float, float, float]] = []  # (gap, open-to-close, volume multiple)
        for i, d in enumerate(sessions):
            r = p.beta * market_moves[i] + st.idio_vol * rng.gauss(0, 1)
            gap = 0.35 * r + rng.gauss(0, 0.25 * p.vol)
            volume_x = math.exp(rng.gauss(0, 0.22)) * (1 + 6 * abs(r))
            if i in catalyst_days:
                sign = rng.choice((1, -1))
                gap += sign * rng.uniform(0.03, 0.08)
                r += sign * rng.uniform(0.01, 0.03)
                volume_x *= rng.uniform(2.5, 4.0)
                template = rng.choice(HISTORY_HEADLINES[sign])
                published = ny(calendar.previous_sessions(d, 1)[0], time(16, 10))
                news.append(_headline(seed, len(news), st.symbol, template, published))
            if i in routine_days:
                template = rng.choice(ROUTINE_HEADLINES)
                published = ny(d, time(rng.randint(6, 18), rng.randint(0, 59)))
                news.append(_headline(seed, len(news), st.symbol, template, published))
            moves.append((gap, 0.65 * r, volume_x))
        price = p.price / math.exp(sum(g + oc for g, oc, _ in moves))
        for d, (gap, oc, volume_x) in zip(sessions, moves, strict=True):
            open_ = price * math.exp(gap)
            o, h, lo, c = _ohlc(rng, open_, open_ * math.exp(oc), 0.45 * p.vol)
            st.daily_bars.append(Bar(
                symbol=st.symbol, timestamp=daily_stamp(d), open=o, high=h, low=lo, close=c,
                volume=int(p.adv * volume_x * 0.85), timeframe="1Day",
            ))
            price = float(c)
        st.price = price


def _headline(
    seed: int, index: int, symbol: str, template: str, published: datetime,
    summary: str = "",
) -> Headline:
    text = template.format(name=NAMES[symbol])
    return Headline(
        id=f"syn-{seed}-{index:05d}", symbols=(symbol,), headline=text,
        summary=(summary or text + ".") + SYNTHETIC_NOTE, source=SOURCE, created_at=published,
    )


# --- intraday sessions ----------------------------------------------------------------------


@dataclass(frozen=True)
class DayPlan:
    role: str  # "catalyst" / "selloff" / "rebound"
    market_gap: float
    market_drift: float  # log-return of the market factor over the session (ex shock)
    volume_x: float  # whole-day volume multiplier


DAY_PLANS = (
    DayPlan("catalyst", 0.003, 0.004, 1.05),
    DayPlan("selloff", -0.002, -0.006, 1.9),
    DayPlan("rebound", 0.008, 0.003, 0.45),
)


def _selloff_drift(i: int, shock_minute: int, n: int) -> float:
    """Per-minute market drift on the selloff day: a slow bleed, then after the shock a
    further slide until 15:30 and a weak bounce into the close."""
    bounce_start = n - 30
    if i < shock_minute:
        return -0.006 / shock_minute
    if i < bounce_start:
        return -0.010 / (bounce_start - shock_minute)
    return 0.006 / 30


def _session(
    states: list[SymbolState], day: int, session: calendar.Session, plan: DayPlan,
    market_rng: random.Random, news: list[Headline], seed: int,
) -> None:
    n = session.minutes
    start = session.open
    shock_minute = None
    if plan.role == "selloff":
        shock_minute = int((ny(session.date, SHOCK_AT) - start) / timedelta(minutes=1)) + 1
        title, summary, tagged = SHOCK_HEADLINE
        news.append(Headline(
            id=f"syn-{seed}-{len(news):05d}", symbols=tagged, headline=title,
            summary=summary + SYNTHETIC_NOTE, source=SOURCE,
            created_at=ny(session.date, SHOCK_AT),
        ))
    # One market path shared by every symbol: that is what makes a selloff broad.
    garch = Garch(market_rng)
    sigma_m = MARKET_VOL / math.sqrt(FULL_DAY) / _VOL_NORM
    market: list[float] = []
    for i in range(n):
        stress = 2.5 if shock_minute is not None and i >= shock_minute else 1.0
        drift = (
            _selloff_drift(i, shock_minute, n) if shock_minute is not None
            else plan.market_drift / n
        )
        market.append(drift + stress * sigma_m * vol_shape(i, n) * garch.draw())

    catalysts = {c.symbol: c for c in INTRADAY_CATALYSTS if c.day == day}
    for st in states:
        cat = catalysts.get(st.symbol)
        if cat is not None:
            news.append(_headline(
                seed, len(news), st.symbol, cat.headline, ny(session.date, cat.published),
                summary=cat.summary,
            ))
        _symbol_session(st, session, plan, market, cat, shock_minute)


def _symbol_session(
    st: SymbolState, session: calendar.Session, plan: DayPlan, market: list[float],
    cat: Catalyst | None, shock_minute: int | None,
) -> None:
    p, rng, n = st.profile, st.rng, session.minutes
    sigma_i = st.idio_vol / math.sqrt(FULL_DAY) / _VOL_NORM
    gap = p.beta * plan.market_gap + rng.gauss(0, 0.3 * p.vol) + (cat.gap if cat else 0.0)
    day_volume = p.adv * plan.volume_x * math.exp(rng.gauss(0, 0.15))
    if cat is not None:
        # Front-loaded trend: most of a catalyst's move comes in the first 90 minutes.
        weights = [
            math.exp(-(i - cat.at_minute) / 90) if i >= cat.at_minute else 0.0 for i in range(n)
        ]
        total = sum(weights)
        trend = [cat.trend * w / total for w in weights]
    else:
        trend = [0.0] * n

    price = st.price * math.exp(gap)
    pre_shock_low = math.inf
    bars: list[Bar] = []
    for i in range(n):
        shape = vol_shape(i, n)
        stress = 2.0 if shock_minute is not None and i >= shock_minute else 1.0
        z = st.garch.draw()
        r = p.beta * market[i] + trend[i] + stress * sigma_i * shape * z
        open_ = price if i == 0 else price * math.exp(rng.gauss(0, 0.05 * sigma_i))
        if shock_minute is not None and i == shock_minute:
            # The gap, measured from the day's low so far: deeper for high-beta names and
            # never less than SHOCK_MIN_DROP (after rounding to cents).
            drop = 0.068 + 0.02 * (p.beta - 0.5) + abs(rng.gauss(0, 0.006))
            open_ = pre_shock_low * min(math.exp(-drop), 1 - SHOCK_MIN_DROP - 0.002)
        close = open_ * math.exp(r)
        o, h, lo, c = _ohlc(rng, open_, close, 0.6 * sigma_i * shape * stress)
        if shock_minute is not None and i < shock_minute:
            pre_shock_low = min(pre_shock_low, float(lo))

        # Volume: the U-shape, louder on big moves, surging on catalysts and the shock.
        surge = 1.0
        if cat is not None and i >= cat.at_minute:
            surge += (cat.volume_x - 1) * math.exp(-(i - cat.at_minute) / 45)
        if shock_minute is not None and i >= shock_minute:
            surge += 6.0 * math.exp(-(i - shock_minute) / 20) + 1.2
        move = abs(r) / max(sigma_i * shape, 1e-9)
        volume = (
            day_volume * volume_shape(i, n) / _VOLUME_SUM * surge
            * math.exp(rng.gauss(0, 0.3)) * (0.75 + 0.25 * min(move, 4.0))
        )
        bars.append(Bar(
            symbol=st.symbol, timestamp=session.open + timedelta(minutes=i),
            open=o, high=h, low=lo, close=c, volume=max(100, int(volume) // 10 * 10),
        ))
        price = float(c)

    st.price = price
    st.minute_bars.extend(bars)
    st.daily_bars.append(Bar(
        symbol=st.symbol, timestamp=daily_stamp(session.date), open=bars[0].open,
        high=max(b.high for b in bars), low=min(b.low for b in bars), close=bars[-1].close,
        volume=sum(b.volume for b in bars), timeframe="1Day",
    ))


# --- the whole dataset ----------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    seed: int
    sessions: tuple[calendar.Session, ...]
    history: tuple[date, ...]
    minute_bars: tuple[Bar, ...]
    daily_bars: tuple[Bar, ...]
    news: tuple[Headline, ...]


def intraday_sessions(start: date, count: int = 3) -> list[calendar.Session]:
    days = [start]
    while len(days) < count:
        days.append(calendar.next_session(days[-1]))
    sessions = [calendar.session_for(d) for d in days]
    if sessions[0] is None:
        raise ValueError(f"{start} is not an NYSE trading day")
    return [s for s in sessions if s is not None]


def generate(seed: int = DEFAULT_SEED, start: date = DEFAULT_START) -> Dataset:
    sessions = intraday_sessions(start)
    history = calendar.previous_sessions(start, HISTORY_SESSIONS)
    market_rng = random.Random(f"{seed}:market")
    states = [
        SymbolState(
            symbol=s, profile=p, rng=random.Random(f"{seed}:{s}"), price=p.price,
            garch=Garch(random.Random(f"{seed}:{s}:garch")),
        )
        for s, p in PROFILES.items()
    ]
    news: list[Headline] = []
    _history(states, history, market_rng, news, seed)
    for day, (session, plan) in enumerate(zip(sessions, DAY_PLANS, strict=True)):
        _session(states, day, session, plan, market_rng, news, seed)

    def by_time(bars: Iterable[Bar]) -> tuple[Bar, ...]:
        return tuple(sorted(bars, key=lambda b: (b.timestamp, b.symbol)))

    return Dataset(
        seed=seed,
        sessions=tuple(sessions),
        history=tuple(history),
        minute_bars=by_time(b for st in states for b in st.minute_bars),
        daily_bars=by_time(b for st in states for b in st.daily_bars),
        news=tuple(sorted(news, key=lambda h: (h.created_at, h.id))),
    )


def _readme(ds: Dataset) -> str:
    s = ds.sessions
    days = ", ".join(
        f"{x.date.isoformat()} ({x.date.strftime('%a')}"
        + (", half-day, 13:00 close)" if x.early_close else ")")
        for x in s
    )
    return f"""# Bundled market data: SYNTHETIC

Every price, volume and headline in this folder is **invented** by
`python -m adapters.market_data.generate_dataset --seed {ds.seed}`. It is not market data,
it is not a record of what happened on these dates, and no headline here was ever
published. It exists so Catalyst can run (demo, backtests, tests) without an Alpaca account.

- Symbols ({len(SYMBOLS)}): {", ".join(SYMBOLS)}.
- Intraday sessions, regular hours only, on real NYSE sessions: {days}.
  The half-day after Thanksgiving 2025 was chosen so the early close is exercised.
- Daily history: {len(ds.history)} sessions ({ds.history[0].isoformat()} to \
{ds.history[-1].isoformat()}), plus one daily bar per intraday session aggregated from its
  minute bars. Daily bars are stamped at midnight New York of their session date.
- Files: `bars_1min.csv` ({len(ds.minute_bars)} rows), `bars_1day.csv` \
({len(ds.daily_bars)} rows), `news.jsonl` ({len(ds.news)} headlines).
  Bars: `timestamp,symbol,open,high,low,close,volume`, the timestamp is the bar's start.
- Volumes are consolidated-tape sized (SIP-like), not IEX-only.

## What is in it

- A one-factor market model with GARCH(1,1) volatility clustering, U-shaped intraday
  volatility and volume, and overnight gaps.
- Universe filter: META trades above the default $500 `max_price`; the rest pass.
- {s[0].date.isoformat()}, catalysts: MRNA (FDA approval, gap up), PLTR (Army contract, gap
  up), BA (FAA pause, gap down), NVDA (product news at 11:15 New York, intraday surge).
- {s[1].date.isoformat()}, **the selloff**: COIN gaps up on bitcoin news and the market
  drifts through the morning; a macro headline lands at 14:01 New York and every symbol
  gaps down on the 14:02 bar, at least {SHOCK_MIN_DROP:.1%} below its lowest price of the
  day so far (about 7-11%, deeper for high-beta names), then slides until 15:30. A long-only
  book of three or more $10,000 positions held at 14:01 loses more than $2,000 on that print,
  stops or not (a stop cannot fill inside a gap): the daily-loss limit and the emergency
  stop fire.
- {s[2].date.isoformat()}, a thin half-day rebound (13:00 close): AMZN gaps up on Black
  Friday sales.

Regenerate (same seed, same bytes): `python -m adapters.market_data.generate_dataset`.
"""


def write(ds: Dataset, out_dir: Path) -> dict[str, int]:
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in (f"{BARS_1MIN}.csv.gz", f"{BARS_1DAY}.csv.gz"):
        (out_dir / stale).unlink(missing_ok=True)
    counts = {
        f"{BARS_1MIN}.csv": write_bars_csv(out_dir / f"{BARS_1MIN}.csv", ds.minute_bars),
        f"{BARS_1DAY}.csv": write_bars_csv(out_dir / f"{BARS_1DAY}.csv", ds.daily_bars),
        NEWS_FILE: write_news_jsonl(out_dir / NEWS_FILE, ds.news),
    }
    (out_dir / "README.md").write_text(_readme(ds), encoding="utf-8")
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--start", type=date.fromisoformat, default=DEFAULT_START,
                        help="first intraday session (the next two sessions follow)")
    parser.add_argument("--out", type=Path, default=BUNDLED_DIR)
    args = parser.parse_args(argv)
    counts = write(generate(args.seed, args.start), args.out)
    for name, count in counts.items():
        print(f"{args.out / name}: {count} rows")


if __name__ == "__main__":
    main()
