"""Bridge directives as the remote sees them (its CONNECT, its keep-alive) and as this broker
sees the local side (its client id, credentials, session), against the scripted remote of
test_window.py on a real socket."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

import midge
from midge.auth.passwd import hash_password
from midge.client import Client, MQTTError
from midge.codec.packets import Publish
from midge.codec.properties import Prop
from midge.codec.reasons import Reason
from midge.config import ListenerConfig, parse_mosquitto_conf
from tests.bridge.test_window import Remote, run, until
from tests.security.certs import Pki

NEVER = 0xFFFFFFFF


def _edge(lines: list[str]) -> midge.Config:
    conf = parse_mosquitto_conf("\n".join(lines) + "\n")
    conf.listeners = [ListenerConfig(port=0, host="127.0.0.1")]
    conf.durability = "none"
    conf.sys_interval = 0
    return conf


@pytest.mark.parametrize("version", ["mqttv31", "mqttv311", "mqttv50"])
@pytest.mark.parametrize("persistent", [False, True], ids=["clean", "persistent"])
def test_the_remote_connect(version: str, persistent: bool) -> None:
    """bridge_protocol_version (MQTT 3.1 is "MQIsdp" level 3), remote_clientid,
    remote_username / remote_password, keepalive_interval (and the PINGREQs it brings),
    cleansession (MQTT 5: Session Expiry "never" when false), try_private (Mosquitto's
    bridge bit, MQTT 3.1 / 3.1.1 only) and notifications (a will saying 0 and a retained 1 on
    the remote's notification topic, or neither)."""

    async def main() -> None:
        remote = Remote(None)
        server = await remote.start()
        conf = _edge(
            [
                "connection r",
                f"address 127.0.0.1:{remote.port}",
                f"bridge_protocol_version {version}",
                "remote_clientid edge-7",
                "remote_username ru",
                "remote_password rp",
                "keepalive_interval 2",
                f"cleansession {str(not persistent).lower()}",
                f"try_private {str(persistent).lower()}",
                f"notifications {str(persistent).lower()}",
                "topic t/# both 1",
            ]
        )
        async with midge.Broker(conf):
            await until(lambda: remote.connect is not None)
            c = remote.connect
            assert c is not None
            level = {"mqttv31": 3, "mqttv311": 4, "mqttv50": 5}[version]
            assert (c.protocol_name, c.protocol_level) == (
                "MQIsdp" if level == 3 else "MQTT",
                level,
            )
            assert (c.client_id, c.username, c.password) == ("edge-7", "ru", b"rp")
            assert c.keep_alive == 2
            assert c.clean_start is not persistent
            assert c.bridge is (persistent and level != 5)
            if level == 5:
                expiry = c.properties.get(Prop.SESSION_EXPIRY_INTERVAL, 0)
                assert expiry == (NEVER if persistent else 0)
            # Keep-alive: a quiet bridge pings within the interval.
            await until(lambda: remote.pings >= 1, timeout=6.0)
            state = "$SYS/broker/connection/edge-7/state"
            if persistent:  # notifications true (the default)
                assert c.will is not None
                assert (c.will.topic, c.will.payload, c.will.retain) == (state, b"0", True)
                (notice,) = remote.published
                assert (notice.topic, notice.payload, notice.retain) == (state, b"1", True)
            else:
                assert c.will is None and remote.published == []
        server.close()

    run(main())


def test_the_local_side(tmp_path: Path) -> None:
    """local_clientid, local_username / local_password (this broker's password file lets the
    bridge in; anonymous clients are not), local_cleansession false with cleansession true: the
    local session persists (it never expires) while the remote one is clean."""
    passwd = tmp_path / "passwd"
    passwd.write_text(f"bridge:{hash_password(b'secret').encode()}\n")

    async def main() -> None:
        remote = Remote(None)
        server = await remote.start()
        conf = _edge(
            [
                "allow_anonymous false",
                f"password_file {passwd}",
                "connection r",
                f"address 127.0.0.1:{remote.port}",
                "local_clientid the-local-side",
                "local_username bridge",
                "local_password secret",
                "cleansession true",
                "local_cleansession false",
                "topic up/# out 1",
            ]
        )
        async with midge.Broker(conf) as edge:
            await until(lambda: remote.connect is not None)
            assert remote.connect is not None and remote.connect.clean_start
            broker = edge.server.broker
            assert broker is not None
            session = broker.sessions["the-local-side"]
            assert session.expiry_interval == NEVER
            async with Client(edge.host, edge.port, username="bridge", password="secret") as c:
                await c.publish("up/x", b"crossed", 1)
            await until(lambda: any(p.topic == "up/x" for p in remote.published))
            (p,) = [p for p in remote.published if p.topic == "up/x"]
            assert isinstance(p, Publish) and p.payload == b"crossed"
        server.close()

    run(main())


def test_a_wrong_local_password_is_refused_by_this_broker(tmp_path: Path) -> None:
    """local_password is checked like any client's: with a wrong one the bridge gets no local
    session (the broker does not start: 0x87 Not authorized), and the remote is never
    contacted."""
    passwd = tmp_path / "passwd"
    passwd.write_text(f"bridge:{hash_password(b'secret').encode()}\n")

    async def main() -> None:
        remote = Remote(None)
        server = await remote.start()
        conf = _edge(
            [
                "allow_anonymous false",
                f"password_file {passwd}",
                "connection r",
                f"address 127.0.0.1:{remote.port}",
                "local_username bridge",
                "local_password wrong",
                "topic up/# out 1",
            ]
        )
        with pytest.raises(MQTTError) as info:
            async with midge.Broker(conf):
                await asyncio.sleep(0.5)
        assert info.value.reason_code == Reason.NOT_AUTHORIZED
        assert remote.connect is None
        server.close()

    run(main())


@pytest.mark.parametrize("trusted", [True, False], ids=["our-ca", "another-ca"])
def test_bridge_capath_and_bridge_alpn(tmp_path: Path, trusted: bool) -> None:
    """bridge_capath (a hashed directory of CA certificates, as ``openssl rehash`` makes)
    makes the connection TLS and decides whom it trusts; bridge_alpn is the protocol offered,
    which the remote (offering "mqtt") agrees to."""
    pki = Pki(tmp_path)
    capath = tmp_path / "capath"
    capath.mkdir()
    shutil.copy(pki.cafile if trusted else pki.other_cafile, capath / "ca.pem")
    subprocess.run(["openssl", "rehash", str(capath)], check=True, timeout=30)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(pki.server_cert, pki.server_key)
    server_tls.set_alpn_protocols(["mqtt"])

    async def main() -> None:
        remote = Remote(None)
        server = await remote.start(server_tls)
        conf = _edge(
            [
                "connection r",
                f"address 127.0.0.1:{remote.port}",
                f"bridge_capath {capath}",
                "bridge_alpn mqtt",
                "topic t/# out 1",
            ]
        )
        async with midge.Broker(conf):
            if trusted:
                await until(lambda: remote.connect is not None)
                assert remote.alpn == "mqtt"
            else:
                await asyncio.sleep(1.0)  # what would have connected by now
                assert remote.connect is None
        server.close()

    run(main())
