"""Connecting to a configured server: user/password, token and TLS, as `nats.url` users do."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from adapters.nats.embedded import EmbeddedNats
from adapters.nats.event_log import EventLog, NatsConnectError, connect_options_from_settings
from config.settings import Nats
from tests.builders import start_requested


async def _round_trip(server: EmbeddedNats, cfg: Nats) -> int:
    log = await EventLog.connect(connect_options_from_settings(cfg, server.url))
    try:
        return await log.publish(start_requested("auth"))
    finally:
        await log.close()


async def test_user_and_password(tmp_path: Path) -> None:
    conf = 'authorization {\n  user: "trader"\n  password: "s3cret"\n}\n'
    with EmbeddedNats(store_dir=tmp_path, extra_config=conf) as server:
        assert await _round_trip(server, Nats(user="trader", password="s3cret")) == 1
        with pytest.raises(NatsConnectError, match="refused the credentials"):
            await _round_trip(server, Nats(user="trader", password="wrong"))


async def test_token(tmp_path: Path) -> None:
    with EmbeddedNats(store_dir=tmp_path,
                      extra_config='authorization {\n  token: "t0ken"\n}\n') as server:
        assert await _round_trip(server, Nats(token="t0ken")) == 1


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_tls_with_a_private_ca(tmp_path: Path) -> None:
    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp_path, check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
        "-keyout", "ca.key", "-out", "ca.pem")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout",
        "server.key", "-out", "server.csr")
    (tmp_path / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "1", "-extfile", "san.cnf", "-out", "server.pem")
    conf = (f'tls {{\n  cert_file: "{tmp_path / "server.pem"}"\n'
            f'  key_file: "{tmp_path / "server.key"}"\n}}\n')
    with EmbeddedNats(store_dir=tmp_path / "store", extra_config=conf) as server:
        cfg = Nats.model_validate({"tls": {"ca_file": str(tmp_path / "ca.pem")}})
        url = server.url.replace("nats://", "tls://")
        log = await EventLog.connect(connect_options_from_settings(cfg, url))
        try:
            assert await log.publish(start_requested("tls")) == 1
        finally:
            await log.close()
