"""What every command shares: the consoles, the common options, one-line failures, settings
loading and running a coroutine."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from adapters.runtime.logs import register_secrets, setup_logging
from config.loader import ConfigError, load_settings
from config.settings import Settings
from domain.errors import CatalystError

console = Console()


err = Console(stderr=True)


ConfigDir = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Directory with risk_parameters.yaml and "
                 "trading_config.yaml (default: the shipped defaults)."),
]


LogFormat = Annotated[
    str | None, typer.Option("--log-format", help="text or json (structured logs on stderr).")
]


def fail(message: str, code: int = 1) -> typer.Exit:
    # One line, verbatim, however narrow the terminal: scripts grep it (file, line, column).
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def input_file(path: Path, option: str) -> Path:
    """A file the command reads: it exists, is a file, and is text (checked on its start, so
    binary bytes are one line here rather than a decode error deep inside a reader)."""
    if not path.exists():
        raise fail(f"{option} {path}: no such file")
    if path.is_dir():
        raise fail(f"{option} {path}: is a directory, not a file")
    try:
        with path.open("rb") as f:
            head = f.read(65536)
    except OSError as e:
        raise fail(f"{option} {path}: cannot read: {e.strerror}") from None
    if path.suffix != ".gz":
        import codecs

        try:
            codecs.getincrementaldecoder("utf-8")().decode(head)  # a cut last char is fine
        except UnicodeDecodeError:
            raise fail(f"{option} {path}: not a text file (binary data)") from None
        if b"\0" in head:
            raise fail(f"{option} {path}: not a text file (binary data)")
    return path


def output_file(path: Path, option: str) -> Path:
    """A file the command writes: its folder exists (we do not guess at creating one)."""
    if path.is_dir():
        raise fail(f"{option} {path}: is a directory; give a file name")
    folder = path.parent
    if not folder.is_dir():
        raise fail(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise fail(f"{option} {path}: the folder {folder} is not writable")
    return path


def check_log_format(log_format: str | None) -> None:
    if log_format is not None and log_format not in ("text", "json"):
        raise fail(f"--log-format {log_format!r}: use text or json")


def check_port(port: int) -> None:
    """The metrics port must be free before the run starts (and creates its store)."""
    import socket

    if not 0 < port < 65536:
        raise fail(f"--metrics-port {port}: not a TCP port (1-65535)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            raise fail(f"--metrics-port {port}: cannot listen on 127.0.0.1:{port}: "
                       f"{e.strerror}") from None


def settings_or_exit(config_dir: Path | None, log_format: str | None = None,
                     one_shot: bool = True) -> Settings:
    try:
        settings = load_settings(config_dir).settings
    except ConfigError as e:
        raise fail(str(e)) from None
    b, s, n = settings.trading.broker, settings.trading.alerts.smtp, settings.trading.nats
    register_secrets(x.get_secret_value() for x in (b.api_key, b.secret_key, s.password,
                                                     n.password, n.token) if x)
    logcfg = settings.trading.logging
    setup_logging(logcfg.level, log_format or logcfg.format)
    if one_shot:
        # A command that connects once says "cannot reach" in one line; nats-py's retry
        # warnings (four a second) would bury it.
        import logging

        logging.getLogger("catalyst.event_log").setLevel(logging.ERROR)
    return settings


def run_async(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except CatalystError as e:
        raise fail(str(e)) from None
    except KeyboardInterrupt:
        raise fail("interrupted", 130) from None
