"""The roles `catalyst serve --role` runs, and what each is made of.

The cut follows what must stay together: a handler whose state another reads in the same
step stays with it (the executor with the broker effect it commands; the guard with the
positions and daily P&L it judges, so the stop decision needs no second round trip), and
each effect sits with the handler that feeds it.

    ingest     market data and news from the provider into the log (stateless)
    session    the scheduler (open, minute ticks) and the session handler; config changes
    strategy   scanner and strategy
    risk       risk guard, positions and daily P&L
    execution  executor, broker effect, order updates, reconciliation, emergency stop
    alerts     alerter and delivery
    api        the HTTP API and dashboard (adapters.api)

`catalyst run` is every role in one process. A stateful role has one active instance at a
time (a lease; adapters.nats.lease): a second one waits as a standby.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from domain.errors import CatalystError
from handlers.base import Handler

ROLES = ("ingest", "session", "strategy", "risk", "execution", "alerts", "api")
HANDLERS: dict[str, tuple[str, ...]] = {
    "session": ("session",),
    "strategy": ("scanner", "strategy"),
    "risk": ("risk_guard", "positions", "daily_pnl"),
    "execution": ("executor",),
    "alerts": ("alerter",),
}
# Roles with state of their own: two active instances would each decide on part of the log.
SINGLE_ACTIVE = frozenset(HANDLERS)


class UnknownRole(CatalystError):
    pass


def parse_roles(text: str) -> tuple[str, ...]:
    """`risk,execution` -> ("risk", "execution"), in the canonical order; names what is
    wrong when a role is unknown or none is given."""
    wanted = [r.strip() for r in text.split(",") if r.strip()]
    if not wanted:
        raise UnknownRole(f"--role: no role given; available: {', '.join(ROLES)}")
    unknown = [r for r in wanted if r not in ROLES]
    if unknown:
        raise UnknownRole(f"--role: unknown role {', '.join(map(repr, unknown))}; available: "
                          f"{', '.join(ROLES)}")
    return tuple(r for r in ROLES if r in wanted)


def handlers_for(roles: Iterable[str], handlers: Sequence[Handler]) -> list[Handler]:
    """The handlers these roles run, in the composition's dispatch order."""
    names = {n for r in roles for n in HANDLERS.get(r, ())}
    return [h for h in handlers if h.name in names]


def leased(roles: Sequence[str]) -> list[str]:
    """The leases a process running `roles` must hold, one per stateful role, in one order
    (so two processes wanting overlapping sets cannot each hold half)."""
    return [r for r in ROLES if r in roles and r in SINGLE_ACTIVE]
