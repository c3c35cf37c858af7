"""Prometheus metrics (prometheus-client). Off by default; one flag turns them on.

    metrics = Metrics()                          # its own registry (tests may make several)
    metrics.instrument(pipeline)                 # in-process runs: every handler and effect
    start_metrics_server(9108, metrics)          # GET http://127.0.0.1:9108/metrics
    task = asyncio.create_task(metrics.poll_consumer_lag(event_log))   # durable consumers

Durable-consumer runtimes that call handlers themselves use `observe_handler(name, seconds)`
and `observe_event(event)` for every event they see.

    catalyst_events_processed_total{handler}       events each handler / effect processed
    catalyst_handler_latency_seconds{handler}      time per event in a handler / effect
    catalyst_consumer_lag{stream,consumer}         pending + unacked messages per consumer
    catalyst_orders_total{outcome}                 approved, denied, submitted, rejected,
                                                   partially_filled, filled, canceled
    catalyst_daily_pnl_usd{component}              total / realized / unrealized (latest)
    catalyst_alerts_total{outcome}                 raised, suppressed, sent, failed
    catalyst_refused_transitions{handler}          broker updates and risk events an order or
                                                   trading-day aggregate refused (the risk
                                                   guard's `refused_transitions`)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from domain.errors import CatalystError
from domain.events import Event

if TYPE_CHECKING:
    from adapters.runtime.pipeline import Pipeline

log = logging.getLogger("catalyst.metrics")

_ORDER_OUTCOMES = {
    "OrderApproved": "approved", "OrderDenied": "denied", "OrderSubmitted": "submitted",
    "OrderRejected": "rejected", "OrderPartiallyFilled": "partially_filled",
    "OrderFilled": "filled", "OrderCanceled": "canceled",
}
_ALERT_OUTCOMES = {"AlertRaised": "raised", "AlertSuppressed": "suppressed",
                   "AlertSent": "sent", "AlertFailed": "failed"}
# Handlers take microseconds, effects (broker, SMTP) up to seconds.
_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 0.025, 0.1, 0.5, 2.5, 10.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("catalyst_events_processed", "Events processed, per handler.",
                              ["handler"], registry=r)
        self.latency = Histogram("catalyst_handler_latency_seconds",
                                 "Time a handler or effect took per event.", ["handler"],
                                 buckets=_BUCKETS, registry=r)
        self.lag = Gauge("catalyst_consumer_lag",
                         "Messages a durable consumer has not processed (pending + unacked).",
                         ["stream", "consumer"], registry=r)
        self.orders = Counter("catalyst_orders", "Orders by outcome.", ["outcome"], registry=r)
        self.pnl = Gauge("catalyst_daily_pnl_usd", "Latest daily P&L (New York session date).",
                         ["component"], registry=r)
        self.alerts = Counter("catalyst_alerts", "Alerts by outcome.", ["outcome"], registry=r)
        self.refused = Gauge("catalyst_refused_transitions",
                             "Updates from the log an aggregate refused (kept its state).",
                             ["handler"], registry=r)

    # --- what happened -----------------------------------------------------------------------

    def observe_event(self, ev: Event) -> None:
        t = ev.type
        outcome = _ORDER_OUTCOMES.get(t)
        if outcome is not None:
            self.orders.labels(outcome).inc()
            return
        outcome = _ALERT_OUTCOMES.get(t)
        if outcome is not None:
            self.alerts.labels(outcome).inc()
            return
        if t == "DailyPnLChanged":
            self.pnl.labels("total").set(float(ev.total))  # type: ignore[attr-defined]
            self.pnl.labels("realized").set(float(ev.realized))  # type: ignore[attr-defined]
            self.pnl.labels("unrealized").set(float(ev.unrealized))  # type: ignore[attr-defined]

    def observe_handler(self, name: str, seconds: float) -> None:
        self.events.labels(name).inc()
        self.latency.labels(name).observe(seconds)

    # --- wiring ------------------------------------------------------------------------------

    def instrument(self, pipeline: Pipeline) -> Pipeline:
        """Count and time every handler and effect of an in-process pipeline."""
        for h in pipeline.handlers:
            h.handle = self._timed(h.name, h.handle)  # type: ignore[method-assign]
            self.watch_refusals(h)
        for e in pipeline.effects:
            e.on_event = self._timed_async(e.name, e.on_event)  # type: ignore[method-assign]
        pipeline.observers.append(self.observe_event)
        return pipeline

    def watch_refusals(self, handler: Any) -> None:
        """Export a handler's count of refused aggregate transitions, if it keeps one."""
        if hasattr(handler, "refused_transitions"):
            self.refused.labels(handler.name).set_function(
                lambda: handler.refused_transitions)

    def _timed(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        count, hist = self.events.labels(name), self.latency.labels(name)

        def timed(*args: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                hist.observe(time.perf_counter() - t0)
                count.inc()

        return timed

    def _timed_async(self, name: str, fn: Callable[..., Awaitable[Any]]
                     ) -> Callable[..., Awaitable[Any]]:
        count, hist = self.events.labels(name), self.latency.labels(name)

        async def timed(*args: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await fn(*args, **kw)
            finally:
                hist.observe(time.perf_counter() - t0)
                count.inc()

        return timed

    async def update_consumer_lag(self, event_log: Any) -> None:
        from adapters.nats.lag import consumer_lag

        for c in await consumer_lag(event_log):
            self.lag.labels(c["stream"], c["consumer"]).set(c["lag"])

    async def poll_consumer_lag(self, event_log: Any, interval: float = 5.0) -> None:
        while True:
            try:
                await self.update_consumer_lag(event_log)
            except Exception as e:  # noqa: BLE001 - metrics never stop the system
                log.warning("consumer lag: %s", e)
            await asyncio.sleep(interval)


class MetricsPortError(CatalystError):
    """The metrics port cannot be bound."""


def start_metrics_server(port: int, metrics: Metrics, addr: str = "127.0.0.1") -> Any:
    """Serve /metrics on a daemon thread; returns the server (call .shutdown() to stop)."""
    try:
        result = start_http_server(port, addr=addr, registry=metrics.registry)
    except OSError as e:  # in use, or not ours to bind: the option's problem, in one line
        raise MetricsPortError(f"--metrics-port {port}: cannot listen on {addr}:{port}: "
                               f"{e.strerror or e}") from None
    server = result[0] if isinstance(result, tuple) else result
    log.info("metrics on http://%s:%s/metrics", addr, port)
    return server
