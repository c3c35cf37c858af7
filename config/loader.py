"""Load the settings: two YAML files, then the environment on top.

Every error names the file, the line and the field, in one line, because a trader reads it
at 09:25 with the open five minutes away.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr, ValidationError

from config.settings import RiskParameters, Settings, TradingConfig
from domain.errors import CatalystError

DEFAULT_DIR = Path(__file__).resolve().parent
FILES: dict[str, tuple[str, type[Any]]] = {
    "risk": ("risk_parameters.yaml", RiskParameters),
    "trading": ("trading_config.yaml", TradingConfig),
}

# The original system's variable names, kept so an existing .env works unchanged.
ENV_MAP: dict[str, tuple[str, ...]] = {
    "TRADING_SESSION_MODE": ("trading", "trading_session", "mode"),
    "TRADING_MODE": ("trading", "broker", "mode"),
    "ALPACA_API_KEY": ("trading", "broker", "api_key"),
    "ALPACA_SECRET_KEY": ("trading", "broker", "secret_key"),
    "ALPACA_BASE_URL": ("trading", "broker", "paper_url"),
    "SMTP_HOST": ("trading", "alerts", "smtp", "host"),
    "SMTP_PORT": ("trading", "alerts", "smtp", "port"),
    "SMTP_USERNAME": ("trading", "alerts", "smtp", "username"),
    "SMTP_PASSWORD": ("trading", "alerts", "smtp", "password"),
    "SMTP_FROM": ("trading", "alerts", "smtp", "from_addr"),
    "SMTP_SECURITY": ("trading", "alerts", "smtp", "security"),
    "ALERT_EMAIL_CRITICAL": ("trading", "alerts", "recipients", "critical"),
    "ALERT_EMAIL_WARNING": ("trading", "alerts", "recipients", "warning"),
    "ALERT_EMAIL_INFO": ("trading", "alerts", "recipients", "info"),
    "CATALYST_NATS_URL": ("trading", "nats", "url"),
    "CATALYST_NATS_REPLICAS": ("trading", "nats", "replicas"),
    "CATALYST_NATS_USER": ("trading", "nats", "user"),
    "CATALYST_NATS_PASSWORD": ("trading", "nats", "password"),
    "CATALYST_NATS_TOKEN": ("trading", "nats", "token"),
    "CATALYST_NATS_CREDS": ("trading", "nats", "creds_file"),
    "CATALYST_BROKER": ("trading", "broker", "kind"),
    "CATALYST_LOG_FORMAT": ("trading", "logging", "format"),
}
LIST_VARS = {"ALERT_EMAIL_CRITICAL", "ALERT_EMAIL_WARNING", "ALERT_EMAIL_INFO"}
INT_VARS = {"SMTP_PORT", "CATALYST_NATS_REPLICAS"}
SECRET_VARS = {"ALPACA_API_KEY", "ALPACA_SECRET_KEY", "SMTP_PASSWORD", "CATALYST_NATS_PASSWORD",
               "CATALYST_NATS_TOKEN"}


class ConfigError(CatalystError):
    """A config file or variable is wrong. `str()` is one line naming file, line and field."""

    def __init__(self, message: str, source: str = "", line: int | None = None,
                 field: str | None = None) -> None:
        where = source + (f":{line}" if line else "")
        parts = [p for p in (where, f"field '{field}'" if field else "", message) if p]
        super().__init__(": ".join(parts))
        self.source, self.line, self.field = source, line, field


@dataclass(frozen=True)
class LoadedConfig:
    settings: Settings
    sources: tuple[str, ...]


def _yaml_line(text: str, loc: tuple[Any, ...]) -> int | None:
    """Line (1-based) of the node at `loc` in the YAML text, or of its nearest parent."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == str(key):
                    line = k.start_mark.line + 1
                    node = v
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, except that a key given twice in one mapping is an error: YAML would let
    the later one win silently, and a trader would not know which value is in force."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(key, line, seen[key])
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(key)
        self.key, self.line, self.first = key, line, first


def _read_yaml(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError("file not found", str(path)) from None
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError("not a text file (binary data, or not UTF-8)", str(path)) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        raise ConfigError(f"YAML syntax error: {e.problem}", str(path),
                          mark.line + 1 if mark else None) from None
    except yaml.YAMLError as e:  # not marked (e.g. bytes that are not text)
        raise ConfigError(f"not YAML: {e}", str(path)) from None
    except _DuplicateKey as e:
        raise ConfigError(f"duplicate key {e.key!r} (first given on line {e.first}; "
                          "give each key once)", str(path), e.line) from None
    if data is None:
        # A file of only comments: every default would be in force without a word.
        raise ConfigError("the file is empty (no settings); write `{}` to take every "
                          "default, or copy the shipped file", str(path))
    if not isinstance(data, dict):
        raise ConfigError("top level must be a mapping of sections", str(path), 1)
    return data, text


def _secret_value(env: Mapping[str, str], name: str) -> str | None:
    if name in env:
        return env[name]
    file_var = f"{name}_FILE"
    if file_var in env:
        try:
            return Path(env[file_var]).read_text().strip()
        except OSError as e:
            raise ConfigError(f"cannot read secret file: {e.strerror}", file_var) from None
    return None


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> list[str]:
    applied = []
    for var, path in ENV_MAP.items():
        value: Any = _secret_value(env, var) if var in SECRET_VARS else env.get(var)
        if value is None or value == "":
            continue
        if var in LIST_VARS:
            value = [a.strip() for a in value.split(",") if a.strip()]
        elif var in INT_VARS and value.strip().isdigit():
            value = int(value)  # the environment is text; the field takes whole numbers only
        node = raw
        for key in path[:-1]:
            node = node.setdefault(key, {}) if isinstance(node.get(key, {}), dict) else {}
        node[path[-1]] = value
        applied.append(var)
    if "CATALYST_NATS_URL" in applied:
        # The variable names the servers (one or comma-separated): it replaces the files'.
        raw["trading"]["nats"].pop("servers", None)
    # The original sent mail whenever SMTP was configured: keep that promise. The mailbox
    # stays: it is the copy that survives an SMTP outage (turn it off in the YAML if unwanted).
    if env.get("SMTP_HOST"):
        alerts = raw.setdefault("trading", {}).setdefault("alerts", {})
        channels = list(alerts.get("channels") or ["mailbox"])
        if "smtp" not in channels:
            alerts["channels"] = [*channels, "smtp"]
    return applied


def load_settings(config_dir: str | Path | None = None,
                  env: Mapping[str, str] | None = None) -> LoadedConfig:
    """Read both files from `config_dir` (default: the shipped defaults) plus environment."""
    env = os.environ if env is None else env
    directory = Path(config_dir) if config_dir else DEFAULT_DIR
    if not directory.is_dir():
        raise ConfigError("config directory not found", str(directory))
    raw: dict[str, Any] = {}
    texts: dict[str, tuple[Path, str]] = {}
    for section, (filename, _) in FILES.items():
        path = directory / filename
        data, text = _read_yaml(path)
        raw[section] = data
        texts[section] = (path, text)
    env_applied = _apply_env(raw, env)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err["loc"])
        named = (err.get("ctx") or {}).get("config_field")
        if isinstance(named, str):  # a model-level check that names the offending key
            loc += (named,)
        section = str(loc[0]) if loc else ""
        field = ".".join(str(p) for p in loc[1:]) or section
        env_var = next((v for v, p in ENV_MAP.items() if p == loc and v in env_applied), None)
        if env_var:
            raise ConfigError(err["msg"], f"environment variable {env_var}", None, field) from None
        path, text = texts.get(section, (directory, ""))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        raise ConfigError(msg, str(path), _yaml_line(text, loc[1:]), field) from None
    sources = tuple(str(p) for p, _ in texts.values()) + tuple(f"env:{v}" for v in env_applied)
    return LoadedConfig(settings, sources)


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective config as plain data, secrets replaced by '********' (the webhook URL
    by its scheme and host: 'https://hooks.slack.com/...')."""

    def walk(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return "********" if value.get_secret_value() else ""
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        if hasattr(value, "is_finite"):  # Decimal
            return str(value)
        return value

    data = walk(settings.model_dump(mode="python"))
    webhook = settings.trading.alerts.webhook
    if webhook is not None:  # where alerts go, without the token in the URL's path
        data["trading"]["alerts"]["webhook"]["url"] = webhook.display_url
    return data


def diff(old: Settings, new: Settings) -> dict[str, list[str]]:
    """Dotted key -> [old, new] for every leaf that changed (secrets redacted)."""
    changes: dict[str, list[str]] = {}

    def walk(a: Any, b: Any, prefix: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
        elif a != b:
            changes[prefix] = [str(a), str(b)]

    walk(redacted(old), redacted(new), "")
    return changes
