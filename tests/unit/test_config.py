"""Config: strict validation, one-line errors naming file/line/field, env overrides, reload."""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest

from adapters.runtime.config_watcher import SettingsHolder
from config.loader import DEFAULT_DIR, ConfigError, diff, load_settings, redacted
from config.settings import Broker
from domain.events import ConfigChanged, ConfigRejected, Event
from tests.fakes.alpaca_fixtures import broker_settings

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    for f in ("risk_parameters.yaml", "trading_config.yaml"):
        shutil.copy(DEFAULT_DIR / f, tmp_path / f)
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1))


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_defaults_are_the_originals() -> None:
    s = load_settings(env={}).settings
    assert s.limits.max_daily_loss_usd == Decimal("2000")
    assert s.limits.max_positions == 5
    assert s.limits.max_position_size_usd == Decimal("10000")
    assert s.limits.warning_threshold_pct == 0.75
    assert s.emergency.require_manual_restart and s.emergency.close_all_positions
    assert s.session.mode == "autonomous"
    assert s.session.auto_close_at_market_close and s.session.max_hold_time_minutes == 180
    assert s.workflow.scan_frequency_minutes == 30 and s.workflow.execute_top_n == 3
    assert s.execution.bracket_stop_loss_atr == 2.0 and s.execution.bracket_take_profit_atr == 3.0
    assert s.trading.broker.effective_kind == "sim"  # no keys: never a real broker
    assert s.trading.nats.url is None  # embedded


def test_unknown_key_names_file_line_and_field(cfg: Path) -> None:
    risk = cfg / "risk_parameters.yaml"
    edit(risk, "max_positions: 5", "max_positionz: 5")
    with pytest.raises(ConfigError) as e:
        load_settings(cfg, env={})
    assert str(e.value).startswith(f"{risk}:{line_of(risk, 'max_positionz')}: ")
    assert "field 'risk_limits.max_positionz'" in str(e.value)
    assert "unknown key" in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("old,new,field,words", [
    ("max_daily_loss_usd: 2000", "max_daily_loss_usd: -5", "risk_limits.max_daily_loss_usd",
     "greater than 0"),
    ("max_positions: 5", "max_positions: lots", "risk_limits.max_positions", "integer"),
    ("warning_threshold_pct: 0.75", "warning_threshold_pct: 1.5",
     "risk_limits.warning_threshold_pct", "less than 1"),
])
def test_bad_values_name_file_line_and_field(cfg: Path, old: str, new: str, field: str,
                                             words: str) -> None:
    risk = cfg / "risk_parameters.yaml"
    edit(risk, old, new)
    with pytest.raises(ConfigError) as e:
        load_settings(cfg, env={})
    msg = str(e.value)
    assert msg.startswith(f"{risk}:{line_of(risk, new)}: field '{field}'"), msg
    assert words in msg


def test_yaml_syntax_error_names_the_line(cfg: Path) -> None:
    trading = cfg / "trading_config.yaml"
    edit(trading, "  execute_top_n: 3", "  execute_top_n: [3")
    with pytest.raises(ConfigError) as e:
        load_settings(cfg, env={})
    assert str(e.value).startswith(f"{trading}:")
    assert "YAML syntax error" in str(e.value)


def test_missing_file_is_named(cfg: Path) -> None:
    (cfg / "risk_parameters.yaml").unlink()
    with pytest.raises(ConfigError, match=r"risk_parameters.yaml: file not found"):
        load_settings(cfg, env={})


def test_weights_must_sum_to_one(cfg: Path) -> None:
    edit(cfg / "trading_config.yaml", "catalyst: 0.3", "catalyst: 0.5")
    with pytest.raises(ConfigError, match="field 'workflow.weights'.*sum to 1.0"):
        load_settings(cfg, env={})


def test_original_environment_names_override(cfg: Path) -> None:
    env = {
        "TRADING_SESSION_MODE": "supervised",
        "TRADING_MODE": "live",
        "ALPACA_API_KEY": "AKTESTKEY1234567890",
        "ALPACA_SECRET_KEY": "s3cr3t-value",
        "SMTP_HOST": "smtp.example.com",
        "SMTP_PORT": "2525",
        "SMTP_USERNAME": "bot",
        "SMTP_PASSWORD": "mail-pass",
        "SMTP_FROM": "alerts@example.com",
        "ALERT_EMAIL_CRITICAL": "a@example.com, b@example.com",
        "ALERT_EMAIL_WARNING": "w@example.com",
        "ALERT_EMAIL_INFO": "i@example.com",
        "CATALYST_NATS_URL": "nats://10.0.0.1:4222",
    }
    s = load_settings(cfg, env=env).settings
    t = s.trading
    assert s.session.mode == "supervised"
    assert t.broker.mode == "live" and t.broker.effective_kind == "alpaca"
    assert t.alerts.smtp.host == "smtp.example.com" and t.alerts.smtp.port == 2525
    assert t.alerts.smtp.username == "bot" and t.alerts.smtp.from_addr == "alerts@example.com"
    assert t.alerts.recipients.critical == ("a@example.com", "b@example.com")
    assert t.alerts.recipients.warning == ("w@example.com",)
    assert t.alerts.recipients.info == ("i@example.com",)
    assert "smtp" in t.alerts.channels  # SMTP configured => mail goes out, as the original
    assert t.nats.url == "nats://10.0.0.1:4222"


def test_smtp_host_keeps_the_mailbox_and_smtp_security_sets_the_mode(cfg: Path) -> None:
    """With SMTP down, the mailbox is the copy that is kept: setting SMTP_HOST must not
    remove it."""
    env = {"SMTP_HOST": "smtp.example.com"}
    s = load_settings(cfg, env=env).settings.trading.alerts
    assert s.channels == ("mailbox", "smtp")
    assert s.smtp.security is None and s.smtp.effective_security == "opportunistic"
    with_user = load_settings(cfg, env={**env, "SMTP_USERNAME": "bot"}).settings
    assert with_user.trading.alerts.smtp.effective_security == "starttls"  # never in clear
    for mode in ("none", "starttls", "tls"):
        s = load_settings(cfg, env={**env, "SMTP_USERNAME": "bot", "SMTP_SECURITY": mode})
        assert s.settings.trading.alerts.smtp.effective_security == mode
    with pytest.raises(ConfigError, match="SMTP_SECURITY"):
        load_settings(cfg, env={**env, "SMTP_SECURITY": "ssl"})


def test_bad_environment_value_names_the_variable(cfg: Path) -> None:
    with pytest.raises(ConfigError, match="environment variable TRADING_SESSION_MODE"):
        load_settings(cfg, env={"TRADING_SESSION_MODE": "yolo"})


def test_secret_from_file_and_redaction(cfg: Path, tmp_path: Path) -> None:
    secret_file = tmp_path / "alpaca_secret"
    secret_file.write_text("file-secret-123\n")
    s = load_settings(cfg, env={"ALPACA_API_KEY": "AKFROMENV0000000000",
                                "ALPACA_SECRET_KEY_FILE": str(secret_file)}).settings
    assert s.trading.broker.secret_key.get_secret_value() == "file-secret-123"
    shown = str(redacted(s))
    assert "file-secret-123" not in shown and "AKFROMENV" not in shown
    assert "********" in shown
    assert "file-secret-123" not in repr(s)


def test_diff_lists_changed_keys_with_secrets_redacted() -> None:
    a = load_settings(env={}).settings
    b = load_settings(env={"ALPACA_SECRET_KEY": "zzz-secret", "TRADING_SESSION_MODE":
                           "supervised"}).settings
    changes = diff(a, b)
    assert changes["trading.trading_session.mode"] == ["autonomous", "supervised"]
    assert changes["trading.broker.secret_key"] == ["None", "********"]


async def test_hot_reload_publishes_changed_and_rejects_bad_edits(cfg: Path) -> None:
    holder = SettingsHolder(load_settings(cfg, env={}).settings, cfg, env={})
    published: list[Event] = []

    async def publish(ev: Event) -> None:
        published.append(ev)

    task = asyncio.create_task(holder.watch(publish, lambda: NOW, interval=0.05))
    try:
        risk = cfg / "risk_parameters.yaml"
        edit(risk, "max_positions: 5", "max_positions: 2")
        await _until(lambda: len(published) == 1)
        assert isinstance(published[0], ConfigChanged)
        assert published[0].changes == {"risk.risk_limits.max_positions": ["5", "2"]}
        assert holder.current.limits.max_positions == 2  # in force for the next event
        # The whole effective config rides along, secrets redacted: what a verification
        # needs to run under the settings in force.
        assert published[0].config == redacted(holder.current)

        edit(risk, "max_positions: 2", "max_positions: -1")
        await _until(lambda: len(published) == 2, msg=lambda: published)
        rejected = published[1]
        assert isinstance(rejected, ConfigRejected)
        assert f"{risk}:{line_of(risk, 'max_positions: -1')}" in rejected.error
        assert "risk_limits.max_positions" in rejected.error
        assert holder.current.limits.max_positions == 2  # the last good config stays
    finally:
        task.cancel()


async def _until(cond, timeout: float = 5.0, msg=None) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not in time: {msg() if msg else ''}")


# --- the live-trading guard: paper never reaches the live host ------------------------------


@pytest.mark.parametrize("url", [
    "https://api.alpaca.markets",
    "https://api.alpaca.markets/v2",
    "HTTPS://API.Alpaca.Markets.:443",
    "https://paper-api.alpaca.markets@api.alpaca.markets",  # userinfo: the host is the live one
])
def test_alpaca_base_url_pointing_at_live_is_refused(cfg: Path, url: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(cfg, env={"ALPACA_BASE_URL": url})
    msg = str(e.value)
    assert msg.startswith("environment variable ALPACA_BASE_URL: field 'broker.paper_url'"), msg
    assert "LIVE trading host" in msg and "\n" not in msg


def test_paper_url_pointing_at_live_in_yaml_names_the_line(cfg: Path) -> None:
    trading = cfg / "trading_config.yaml"
    edit(trading, "paper_url: https://paper-api.alpaca.markets",
         "paper_url: https://api.alpaca.markets")
    with pytest.raises(ConfigError) as e:
        load_settings(cfg, env={})
    msg = str(e.value)
    assert msg.startswith(f"{trading}:{line_of(trading, 'paper_url:')}: "
                          "field 'broker.paper_url'"), msg


def test_paper_and_live_on_the_same_alpaca_host_are_refused() -> None:
    with pytest.raises(ValueError, match="paper_url: paper_url and live_url are the same"):
        Broker(paper_url="https://broker-api.alpaca.markets",
               live_url="https://broker-api.alpaca.markets/")
    with pytest.raises(ValueError, match="live_url: 'paper-api.alpaca.markets' is the paper"):
        Broker(live_url="https://paper-api.alpaca.markets")


def test_live_mode_on_the_paper_host_is_refused(cfg: Path) -> None:
    trading = cfg / "trading_config.yaml"
    edit(trading, "live_url: https://api.alpaca.markets",
         "live_url: https://paper-api.alpaca.markets")
    with pytest.raises(ConfigError) as e:
        load_settings(cfg, env={"TRADING_MODE": "live"})
    assert str(e.value).startswith(f"{trading}:{line_of(trading, 'live_url:')}: "
                                   "field 'broker.live_url'")


def test_broker_urls_must_be_http() -> None:
    with pytest.raises(ValueError, match="paper_url: 'api.alpaca.markets' is not an http"):
        Broker(paper_url="api.alpaca.markets")


def test_custom_hosts_still_validate_for_the_fakes() -> None:
    fake = SimpleNamespace(url="http://127.0.0.1:54321", api_key="PKFAKE", secret_key="s")
    assert broker_settings(fake).paper_url == fake.url  # type: ignore[arg-type]
    for mode in ("paper", "live"):  # both URLs at one fake host (the e2e tests do this)
        b = Broker(mode=mode, paper_url=fake.url, live_url=fake.url)
        assert (b.paper_url, b.live_url) == (fake.url, fake.url)
    live = load_settings(env={"TRADING_MODE": "live"}).settings.trading.broker
    assert live.mode == "live" and live.live_url == "https://api.alpaca.markets"


# --- the webhook URL is a secret (its path carries the token) -------------------------------

WEBHOOK = "https://hooks.slack.com/services/T0AAA/B0BBB/sEcReTtOkEn123"


def test_webhook_url_is_secret_in_redacted_and_diff(cfg: Path) -> None:
    edit(cfg / "trading_config.yaml", "  cooldown_minutes: 15",
         f"  webhook:\n    url: {WEBHOOK}\n  cooldown_minutes: 15")
    s = load_settings(cfg, env={}).settings
    hook = s.trading.alerts.webhook
    assert hook is not None and hook.url.get_secret_value() == WEBHOOK
    data = redacted(s)
    assert data["trading"]["alerts"]["webhook"]["url"] == "https://hooks.slack.com/..."
    for shown in (json.dumps(data), repr(s), str(diff(load_settings(env={}).settings, s))):
        assert "sEcReTtOkEn123" not in shown and "/services/" not in shown


def test_bad_webhook_url_error_does_not_echo_it(cfg: Path) -> None:
    edit(cfg / "trading_config.yaml", "  cooldown_minutes: 15",
         "  webhook:\n    url: hooks.slack.com/services/T0/B0/sEcReT\n  cooldown_minutes: 15")
    with pytest.raises(ConfigError, match="field 'alerts.webhook.url'.*http") as e:
        load_settings(cfg, env={})
    assert "sEcReT" not in str(e.value)


def test_paper_mode_refuses_a_live_order_update_stream(cfg: Path) -> None:
    edit(cfg / "trading_config.yaml", "  timeout_seconds: 10\n  max_retries: 5",
         "  timeout_seconds: 10\n  max_retries: 5\n  stream_url: wss://api.alpaca.markets/stream")
    with pytest.raises(ConfigError, match="field 'broker.stream_url'.*LIVE host"):
        load_settings(cfg, env={})
