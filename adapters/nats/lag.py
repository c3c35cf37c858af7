"""How far each durable consumer is behind its stream, as JetStream reports it."""

from __future__ import annotations

from typing import Any


async def consumer_lag(log: Any) -> list[dict[str, Any]]:
    out = []
    for stream in (log.names.record, log.names.market_data):
        try:
            infos = await log.js.consumers_info(stream)
        except Exception:  # noqa: BLE001 - a stream may be absent
            continue
        for info in infos:
            if not info.config.durable_name:
                continue  # ephemeral readers (replays, tails) are not handlers
            pending = info.num_pending or 0
            acking = info.num_ack_pending or 0
            out.append({"stream": stream, "consumer": info.name, "lag": pending + acking,
                        "num_pending": pending, "num_ack_pending": acking,
                        "redelivered": info.num_redelivered or 0,
                        "last_delivered_seq": info.delivered.stream_seq
                        if info.delivered else None})
    return sorted(out, key=lambda c: (c["stream"], c["consumer"]))
