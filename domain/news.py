"""Catalyst score from headlines, pure.

Each headline gets:
- catalyst types found by keyword (FDA, M&A, earnings, guidance, upgrade, downgrade), whose
  largest weight is the headline's strength (plain news without a type: `GENERAL_WEIGHT`);
- a sentiment in [-1, 1] from positive/negative word counts, (pos - neg) / (pos + neg); a
  headline with no sentiment words counts as mild attention (`NEUTRAL_ATTENTION`);
- a recency weight 0.5 ** (age_hours / half_life_hours) at the scan time.

net = sum(recency * strength * sentiment) over the headlines, squashed into [0, 1] around
`NO_NEWS_SCORE`: no news scores 0.2, good news rises towards 1, bad news falls towards 0.
Headlines dated after the scan time are ignored (a backtest must not see the future), and so
are headlines older than `MAX_AGE_HALF_LIVES` half-lives (their weight is below 0.4%).
The original system returned a constant 0.5 here; this score depends on every input.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from domain.values import Headline

NO_NEWS_SCORE = 0.2
GENERAL_WEIGHT = 0.2
NEUTRAL_ATTENTION = 0.25
MAX_AGE_HALF_LIVES = 8.0


def _words(*terms: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(re.escape(t) for t in terms) + r")\b", re.IGNORECASE)


# name -> (weight, keywords). Weights: binary events that reprice a stock outright (FDA,
# M&A) weigh most; scheduled results and guidance next; analyst calls least.
CATALYST_TYPES: dict[str, tuple[float, re.Pattern[str]]] = {
    "fda": (1.0, _words(
        "fda", "pdufa", "clinical trial", "phase 3", "phase iii", "breakthrough therapy",
        "drug approval", "clearance",
    )),
    "merger_acquisition": (1.0, _words(
        "acquire", "acquires", "acquired", "acquisition", "merger", "merge", "buyout",
        "takeover", "tender offer", "m&a",
    )),
    "earnings": (0.8, _words(
        "earnings", "eps", "quarterly results", "quarterly profit", "revenue", "q1", "q2",
        "q3", "q4", "fiscal quarter",
    )),
    "guidance": (0.7, _words(
        "guidance", "outlook", "forecast", "raises forecast", "cuts forecast",
    )),
    "upgrade": (0.6, _words(
        "upgrade", "upgrades", "upgraded", "raises price target", "price target raised",
        "initiates coverage",
    )),
    "downgrade": (0.6, _words(
        "downgrade", "downgrades", "downgraded", "cuts price target", "price target cut",
        "lowers price target",
    )),
}

POSITIVE = _words(
    "beat", "beats", "tops", "exceeds", "surge", "surges", "soar", "soars", "jump", "jumps",
    "rally", "rallies", "gain", "gains", "record", "strong", "stronger", "growth", "raise",
    "raises", "raised", "upgrade", "upgrades", "upgraded", "approval", "approved", "approves",
    "wins", "win", "awarded", "partnership", "breakthrough", "outperform", "bullish", "higher",
    "boost", "boosts", "positive", "profit", "expands", "buy rating",
)
NEGATIVE = _words(
    "miss", "misses", "missed", "falls", "fall", "plunge", "plunges", "drop", "drops", "sink",
    "sinks", "slump", "slumps", "tumble", "tumbles", "weak", "weaker", "loss", "losses",
    "cut", "cuts", "lower", "lowers", "lowered", "downgrade", "downgrades", "downgraded",
    "reject", "rejects", "rejected", "delay", "delays", "delayed", "recall", "lawsuit",
    "probe", "investigation", "fraud", "bankruptcy", "warns", "warning", "decline",
    "declines", "bearish", "halted", "layoffs", "fails", "failed", "negative", "sell rating",
    "underperform",
)


@dataclass(frozen=True)
class HeadlineScore:
    id: str
    headline: str
    catalysts: tuple[str, ...]
    strength: float
    sentiment: float
    age_hours: float
    recency: float
    contribution: float  # recency * strength * (sentiment or NEUTRAL_ATTENTION)

    def as_detail(self) -> dict[str, object]:
        return {
            "headline": self.headline,
            "catalysts": list(self.catalysts),
            "sentiment": round(self.sentiment, 3),
            "age_hours": round(self.age_hours, 2),
            "contribution": round(self.contribution, 4),
        }


@dataclass(frozen=True)
class CatalystScore:
    score: float  # [0, 1]
    catalysts: tuple[str, ...]  # detected types, heaviest first
    net: float
    headlines: tuple[HeadlineScore, ...]  # counted headlines, biggest |contribution| first


def catalyst_types(text: str) -> tuple[str, ...]:
    """Catalyst types named in `text`, heaviest first (then by name)."""
    found = [name for name, (_, pattern) in CATALYST_TYPES.items() if pattern.search(text)]
    return tuple(sorted(found, key=lambda n: (-CATALYST_TYPES[n][0], n)))


def sentiment(text: str) -> float:
    """(positive - negative) / (positive + negative) word hits; 0.0 with no hits."""
    pos = len(POSITIVE.findall(text))
    neg = len(NEGATIVE.findall(text))
    return 0.0 if pos + neg == 0 else (pos - neg) / (pos + neg)


def recency_weight(age_hours: float, half_life_hours: float) -> float:
    if half_life_hours <= 0:
        raise ValueError("half_life_hours must be positive")
    return 0.5 ** (max(age_hours, 0.0) / half_life_hours)


def score_headline(h: Headline, as_of: datetime, half_life_hours: float) -> HeadlineScore:
    text = f"{h.headline}. {h.summary}"
    types = catalyst_types(text)
    strength = CATALYST_TYPES[types[0]][0] if types else GENERAL_WEIGHT
    sent = sentiment(text)
    age = (as_of - h.created_at).total_seconds() / 3600
    rec = recency_weight(age, half_life_hours)
    direction = sent if sent != 0 else NEUTRAL_ATTENTION
    return HeadlineScore(
        id=h.id, headline=h.headline, catalysts=types, strength=strength, sentiment=sent,
        age_hours=max(age, 0.0), recency=rec, contribution=rec * strength * direction,
    )


def squash(net: float) -> float:
    """Map net evidence (any real) into [0, 1]: 0 -> NO_NEWS_SCORE, +inf -> 1, -inf -> 0."""
    t = math.tanh(net)
    if net >= 0:
        return NO_NEWS_SCORE + (1 - NO_NEWS_SCORE) * t
    return NO_NEWS_SCORE * (1 + t)


def catalyst_score(
    headlines: Iterable[Headline], as_of: datetime, half_life_hours: float
) -> CatalystScore:
    """Score a symbol's headlines at `as_of`; see the module docstring for the formula."""
    seen: dict[str, Headline] = {}
    for h in headlines:  # an updated headline keeps its id: count it once, latest version
        seen[h.id] = h
    max_age = MAX_AGE_HALF_LIVES * half_life_hours
    scored = []
    for h in seen.values():
        if h.created_at > as_of:
            continue
        s = score_headline(h, as_of, half_life_hours)
        if s.age_hours <= max_age:
            scored.append(s)
    scored.sort(key=lambda s: (-abs(s.contribution), s.id))
    net = sum(s.contribution for s in scored)
    types = {t for s in scored for t in s.catalysts}
    ordered = tuple(sorted(types, key=lambda n: (-CATALYST_TYPES[n][0], n)))
    return CatalystScore(score=squash(net), catalysts=ordered, net=net, headlines=tuple(scored))
