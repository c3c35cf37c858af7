"""What `catalyst serve --role` accepts and what each role runs."""

from __future__ import annotations

import pytest

from adapters.runtime.composition import build_handlers
from adapters.runtime.roles import HANDLERS, UnknownRole, handlers_for, leased, parse_roles
from config.settings import Settings


def test_roles_parse_in_the_canonical_order_and_unknown_ones_are_named() -> None:
    assert parse_roles("execution, risk") == ("risk", "execution")
    with pytest.raises(UnknownRole, match="unknown role 'scanner'.*available: ingest"):
        parse_roles("risk,scanner")
    with pytest.raises(UnknownRole, match="no role given"):
        parse_roles(" , ")


def test_every_handler_belongs_to_exactly_one_role() -> None:
    names = [h.name for h in build_handlers(Settings(), "sim")]
    owners = {n: [r for r, hs in HANDLERS.items() if n in hs] for n in names}
    assert all(len(rs) == 1 for rs in owners.values()), owners


def test_a_process_leases_its_stateful_roles_only_in_one_order() -> None:
    assert leased(("api", "execution", "ingest", "risk")) == ["risk", "execution"]
    every = build_handlers(Settings(), "sim")
    assert [h.name for h in handlers_for(("risk",), every)] == [
        "risk_guard", "positions", "daily_pnl"]
