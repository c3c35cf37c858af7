"""Catalyst score: depends on what the headlines say and when (never a constant)."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from domain.news import (
    NO_NEWS_SCORE,
    catalyst_score,
    catalyst_types,
    recency_weight,
    sentiment,
)
from tests.unit.scan_builders import OPEN, headline

NOW = OPEN + timedelta(hours=1)
HL = 6.0


def score(*texts: str, age_hours: float = 0.0, half_life: float = HL) -> float:
    hs = [headline(t, NOW - timedelta(hours=age_hours)) for t in texts]
    return catalyst_score(hs, NOW, half_life).score


def test_no_headlines_scores_a_defined_low_value() -> None:
    res = catalyst_score([], NOW, HL)
    assert res.score == NO_NEWS_SCORE == 0.2
    assert res.catalysts == () and res.headlines == ()


def test_fresh_fda_approval_by_hand() -> None:
    # fda (weight 1.0); "wins", "approval" positive, nothing negative: sentiment +1;
    # age 0: recency 1 -> net 1 -> 0.2 + 0.8 * tanh(1)
    res = catalyst_score([headline("Acme wins FDA approval for lead drug", NOW)], NOW, HL)
    assert res.catalysts == ("fda",)
    assert res.net == pytest.approx(1.0)
    assert res.score == pytest.approx(0.2 + 0.8 * math.tanh(1.0))


def test_bad_news_scores_below_no_news() -> None:
    # "rejects": sentiment -1, fda 1.0 -> net -1 -> 0.2 * (1 - tanh(1))
    s = score("FDA rejects Acme drug application")
    assert s == pytest.approx(0.2 * (1 - math.tanh(1.0)))
    assert s < NO_NEWS_SCORE


def test_different_headlines_give_different_scores() -> None:
    texts = [
        "Acme wins FDA approval for lead drug",
        "Acme beats earnings estimates, revenue surges",
        "Analyst upgrades Acme to buy",
        "Acme to report quarterly results on Tuesday",
        "Acme names new board member",
        "Acme misses earnings, shares plunge",
        "Analyst downgrades Acme",
    ]
    scores = [score(t) for t in texts]
    assert len(set(scores)) == len(scores)
    # strong positive > positive earnings > upgrade > neutral scheduled earnings > plain news
    # > no news > bad news
    assert scores[0] > scores[1] > scores[2] > scores[3] > scores[4] > NO_NEWS_SCORE
    assert scores[5] < NO_NEWS_SCORE and scores[6] < NO_NEWS_SCORE


def test_neutral_catalyst_counts_as_mild_attention() -> None:
    # earnings (0.8), no sentiment word -> 0.8 * 0.25 = 0.2 net
    assert score("Acme to report quarterly results on Tuesday") == pytest.approx(
        0.2 + 0.8 * math.tanh(0.2)
    )


def test_more_good_news_scores_higher_but_stays_below_one() -> None:
    one = score("Acme wins FDA approval")
    two = score("Acme wins FDA approval", "Acme to acquire Beta in record deal")
    assert one < two < 1.0


def test_news_half_life_changes_the_score() -> None:
    # 6 h old: half-life 6 h -> recency 0.5; half-life 12 h -> 2 ** -0.5
    text = "Acme wins FDA approval"
    assert score(text, age_hours=6, half_life=6) == pytest.approx(0.2 + 0.8 * math.tanh(0.5))
    assert score(text, age_hours=6, half_life=12) == pytest.approx(
        0.2 + 0.8 * math.tanh(2**-0.5)
    )
    assert score(text, age_hours=6, half_life=12) > score(text, age_hours=6, half_life=6)


def test_older_news_weighs_less() -> None:
    text = "Acme beats earnings estimates"
    assert score(text, age_hours=0) > score(text, age_hours=3) > score(text, age_hours=12)


def test_future_and_stale_headlines_are_ignored() -> None:
    future = headline("Acme wins FDA approval", NOW + timedelta(minutes=1))
    stale = headline("Acme wins FDA approval", NOW - timedelta(hours=8 * HL + 1), id="old")
    res = catalyst_score([future, stale], NOW, HL)
    assert res.score == NO_NEWS_SCORE and res.headlines == ()


def test_an_updated_headline_counts_once() -> None:
    h1 = headline("Acme wins FDA approval", NOW, id="n1")
    h2 = headline("Acme wins FDA approval", NOW, id="n1")
    assert catalyst_score([h1, h2], NOW, HL).score == catalyst_score([h1], NOW, HL).score


def test_catalyst_types_and_sentiment_words() -> None:
    assert catalyst_types("Acme raises guidance after Q3 earnings beat") == (
        "earnings", "guidance",
    )
    assert catalyst_types("Beta agrees to merger with Acme; analyst upgrades") == (
        "merger_acquisition", "upgrade",
    )
    assert catalyst_types("Acme opens new office") == ()
    assert sentiment("Acme beats, shares surge") == 1.0
    assert sentiment("Acme beats but warns on outlook") == 0.0
    assert sentiment("Acme opens new office") == 0.0


def test_summary_text_counts_too() -> None:
    plain = headline("Acme update", NOW, id="a")
    with_summary = headline("Acme update", NOW, id="a", summary="FDA approval granted")
    assert catalyst_score([with_summary], NOW, HL).score > catalyst_score([plain], NOW, HL).score


def test_recency_weight() -> None:
    assert recency_weight(0, 6) == 1.0
    assert recency_weight(12, 6) == 0.25
    assert recency_weight(-1, 6) == 1.0  # clock skew: never above 1
    with pytest.raises(ValueError):
        recency_weight(1, 0)
