"""Operations commands (alerts, data, replay, status, audit), registered on the main app."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    return None
