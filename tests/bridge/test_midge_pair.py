"""A chain of two midge brokers in one process each way round (no processes): an MQTT 3.1.1
bridge (try_private: the remote midge sends the bridge none of its own messages) and an MQTT 5
bridge (No Local), each with a ``both`` pattern, so that a loop would show at once."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from midge.config import Config, ListenerConfig, parse_mosquitto_conf
from tests.bridge.test_mosquitto_remote import Sub, wait_state, wait_states
from tests.conftest import RunningBroker
from tests.security.certs import Pki, name


@contextmanager
def running(config: Config) -> Iterator[RunningBroker]:
    config.listeners = [ListenerConfig(port=0, host="127.0.0.1")]
    config.sys_interval = 0
    broker = RunningBroker(config)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.mark.parametrize("version", ["mqttv31", "mqttv311", "mqttv50"])
def test_two_midges_both_ways_without_loops(version: str) -> None:
    with running(Config()) as central:
        edge_conf = parse_mosquitto_conf(
            "\n".join(
                [
                    "connection central",
                    f"address 127.0.0.1:{central.port}",
                    f"bridge_protocol_version {version}",
                    "remote_clientid edge",
                    "topic chat/# both 2",
                    "topic up/# out 1 edge/ site/",
                ]
            )
            + "\n"
        )
        with running(edge_conf) as edge:
            at_central = Sub(central.port, ["chat/#", "site/#", "$SYS/broker/connection/#"])
            wait_state(at_central, "$SYS/broker/connection/edge/state", b"1")
            at_edge = Sub(edge.port, ["chat/#"])
            at_edge.publish("chat/a", b"from edge", qos=2)
            assert at_edge.get().payload == b"from edge"
            m = at_central.get()
            assert (m.topic, m.payload, m.qos) == ("chat/a", b"from edge", 1)
            at_central.publish("chat/b", b"from central", qos=2)
            assert at_central.get().payload == b"from central"
            assert at_edge.get().payload == b"from central"
            at_edge.publish("edge/up/x", b"remapped")
            m = at_central.get()
            assert (m.topic, m.payload) == ("site/up/x", b"remapped")
            # Nothing more: no message came back round the loop.
            with pytest.raises(queue.Empty):
                print(at_central.get(1.0))
            with pytest.raises(queue.Empty):
                print(at_edge.get(0.2))
            at_edge.close()
        wait_state(at_central, "$SYS/broker/connection/edge/state", b"0")
        at_central.close()


def test_a_tls_bridge_with_a_client_certificate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """bridge_cafile / bridge_certfile / bridge_keyfile / bridge_tls_version against a midge
    whose TLS listener requires a client certificate; on an address the server certificate
    does not name (127.0.0.2), bridge_insecure connects and a bridge without it does not."""
    pki = Pki(tmp_path)
    certfile, keyfile = pki.client("bridge", name(("CN", "edge")))

    def tls_listener(host: str) -> ListenerConfig:
        return ListenerConfig(
            port=0,
            host=host,
            certfile=pki.server_cert,
            keyfile=pki.server_key,
            cafile=pki.cafile,
            require_certificate=True,
        )

    central_config = Config(
        listeners=[
            ListenerConfig(port=0, host="127.0.0.1"),
            tls_listener("127.0.0.1"),
            tls_listener("127.0.0.2"),
        ],
        sys_interval=0,
    )
    central = RunningBroker(central_config)
    try:
        tls_port = central.server.addresses[1][1]
        other_port = central.server.addresses[2][1]
        client_tls = [
            f"bridge_cafile {pki.cafile}",
            f"bridge_certfile {certfile}",
            f"bridge_keyfile {keyfile}",
        ]
        edge_conf = parse_mosquitto_conf(
            "\n".join(
                [
                    "connection central",
                    f"address 127.0.0.1:{tls_port}",
                    "remote_clientid edge",
                    *client_tls,
                    "bridge_tls_version tlsv1.2",
                    "topic tls/# out 1",
                    "connection insecure",
                    f"address 127.0.0.2:{other_port}",
                    "remote_clientid edge2",
                    *client_tls,
                    "bridge_insecure true",
                    "topic ins/# out 1",
                    "connection strict",
                    f"address 127.0.0.2:{other_port}",
                    "remote_clientid edge3",
                    *client_tls,
                    "restart_timeout 1",
                    "topic strict/# out 1",
                ]
            )
            + "\n"
        )
        at_central = Sub(central.port, ["tls/#", "ins/#", "strict/#", "$SYS/broker/connection/#"])
        with caplog.at_level("INFO", logger="midge.bridge"), running(edge_conf) as edge:
            # Either bridge may connect first.
            wait_states(
                at_central,
                {
                    "$SYS/broker/connection/edge/state": b"1",
                    "$SYS/broker/connection/edge2/state": b"1",
                },
            )
            at_edge = Sub(edge.port, [])
            at_edge.publish("tls/x", b"secret")
            assert at_central.get().payload == b"secret"
            at_edge.publish("ins/x", b"insecure")
            assert at_central.get().payload == b"insecure"
            at_edge.publish("strict/x", b"never")
            with pytest.raises(queue.Empty):
                print(at_central.get(1.0).payload)
            at_edge.close()
        at_central.close()
        refused = [
            r.getMessage() for r in caplog.records if "strict: cannot connect" in r.getMessage()
        ]
        assert refused and "127.0.0.2" in refused[0], refused
    finally:
        central.stop()


def test_lazy_start_addresses_and_idle_timeout() -> None:
    """start_type lazy: no connection until ``threshold`` messages wait; then both cross, and
    after ``idle_timeout`` seconds without traffic the bridge disconnects. The first address
    refuses connections: the bridge moves on to the second."""
    from tests.procbroker import free_port

    with running(Config()) as central:
        edge_conf = parse_mosquitto_conf(
            "\n".join(
                [
                    "connection central",
                    f"addresses 127.0.0.1:{free_port()} 127.0.0.1:{central.port}",
                    "remote_clientid edge",
                    "start_type lazy",
                    "threshold 2",
                    "idle_timeout 2",
                    "restart_timeout 1",
                    "topic lazy/# out 1",
                ]
            )
            + "\n"
        )
        at_central = Sub(central.port, ["lazy/#", "$SYS/broker/connection/edge/state"])
        with running(edge_conf) as edge:
            at_edge = Sub(edge.port, ["$SYS/broker/connection/central/state"])
            wait_state(at_edge, "$SYS/broker/connection/central/state", b"0")
            at_edge.publish("lazy/1", b"one")
            with pytest.raises(queue.Empty):  # one message waits: below the threshold
                print(at_central.get(1.5))
            at_edge.publish("lazy/2", b"two")
            assert [at_central.get().payload for _ in range(2)] == [b"one", b"two"]
            wait_state(at_edge, "$SYS/broker/connection/central/state", b"1")
            # idle: disconnected (the remote says 0 as the bridge leaves)
            wait_state(at_central, "$SYS/broker/connection/edge/state", b"0", timeout=10)
            at_edge.close()
        at_central.close()


def test_the_local_session_obeys_the_acls(tmp_path: Path) -> None:
    """The bridge's local session is a client like any other: with local_username, the ACL
    file decides what it may publish here; a refused message is dropped and the next one
    passes (nothing waits behind it)."""
    acl = tmp_path / "acl"
    acl.write_text("topic read #\nuser bridge\ntopic readwrite ok/#\n")
    with running(Config()) as central:
        edge_conf = parse_mosquitto_conf(
            "\n".join(
                [
                    "allow_anonymous true",
                    f"acl_file {acl}",
                    "connection central",
                    f"address 127.0.0.1:{central.port}",
                    "remote_clientid edge",
                    "local_username bridge",
                    "topic # in 1",
                ]
            )
            + "\n"
        )
        at_central = Sub(central.port, ["$SYS/broker/connection/edge/state"])
        with running(edge_conf) as edge:
            wait_state(at_central, "$SYS/broker/connection/edge/state", b"1")
            at_edge = Sub(edge.port, ["denied/#", "ok/#"])
            at_central.publish("denied/x", b"no")
            at_central.publish("ok/x", b"yes")
            m = at_edge.get()
            assert (m.topic, m.payload) == ("ok/x", b"yes")
            with pytest.raises(queue.Empty):
                print(at_edge.get(0.5))
            at_edge.close()
        at_central.close()


def test_a_store_of_a_bridge_no_longer_configured_is_named_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """bridge-NAME.db of a bridge gone from the configuration is kept (it may hold messages in
    flight) and the start-up log names it; the configured bridge's own file is not named."""
    (tmp_path / "bridge-gone.db").write_bytes(b"")
    (tmp_path / "bridge-kept.db").write_bytes(b"")
    config = parse_mosquitto_conf(
        "persistence true\nconnection kept\naddress 127.0.0.1:1\ntopic x\nstart_type once\n"
    )
    config.data_dir = str(tmp_path)
    with caplog.at_level("INFO", logger="midge"), running(config):
        pass
    notices = [r.getMessage() for r in caplog.records if "no configured bridge" in r.getMessage()]
    assert notices == [
        f"{tmp_path / 'bridge-gone.db'} belongs to no configured bridge"
        " (kept; delete it if that bridge is gone)"
    ]
    assert (tmp_path / "bridge-gone.db").exists()


def test_notifications_retain_packet_size_and_bind_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One pair of midges for several directives that change what crosses: a custom
    notification_topic kept local (notifications_local_only), bridge_outgoing_retain false,
    bridge_max_packet_size (MQTT 5: the remote sends nothing bigger), bridge_bind_address."""
    with caplog.at_level("INFO", logger="midge"), running(Config()) as central:
        at_central = Sub(central.port, ["#", "$SYS/broker/connection/#"])
        edge_conf = parse_mosquitto_conf(
            "\n".join(
                [
                    "connection central",
                    f"address 127.0.0.1:{central.port}",
                    "bridge_protocol_version mqttv50",
                    "remote_clientid edge",
                    "notification_topic edge/status",
                    "notifications_local_only true",
                    "bridge_outgoing_retain false",
                    "bridge_max_packet_size 200",
                    "bridge_bind_address 127.0.0.2",
                    "topic up/# out 1",
                    "topic down/# in 1",
                ]
            )
            + "\n"
        )
        with running(edge_conf) as edge:
            at_edge = Sub(edge.port, ["down/#", "edge/status"])
            # Local only: the edge has its notification topic, the remote none.
            wait_state(at_edge, "edge/status", b"1")  # 0 first, until the bridge connects
            at_edge.publish("up/kept", b"retained here", retain=True)
            m = at_central.get()
            assert (m.topic, m.payload) == ("up/kept", b"retained here")
            # bridge_outgoing_retain false: the remote keeps no retained copy.
            late = Sub(central.port, ["up/#"])
            with pytest.raises(queue.Empty):
                print(late.get(0.5).payload)
            late.close()
            # bridge_max_packet_size: the remote drops what is bigger for the bridge.
            at_central.publish("down/big", b"x" * 400)
            at_central.publish("down/small", b"y")
            assert at_central.get().topic == "down/big"  # the central's own subscriber
            assert at_central.get().topic == "down/small"
            assert at_edge.get().payload == b"y"
            with pytest.raises(queue.Empty):
                print(at_edge.get(0.3).payload)
            at_edge.close()
        at_central.close()
    # (edge/status never reached the central: at_central, subscribed to #, got up/kept first.)
    lines = [r.getMessage() for r in caplog.records]
    assert any("New client connected from 127.0.0.2:" in t and "as edge" in t for t in lines)


def test_back_to_the_primary_and_start_type_once() -> None:
    """round_robin false: with the primary down the bridge connects to the secondary, and once
    the primary listens it moves back to it. start_type once: a bridge whose one attempt failed
    never tries again, even once its remote listens (that primary, here)."""
    from tests.procbroker import free_port

    primary_port = free_port()
    with running(Config()) as secondary:
        at_secondary = Sub(secondary.port, ["$SYS/broker/connection/#"])
        edge_conf = parse_mosquitto_conf(
            "\n".join(
                [
                    "connection central",
                    f"addresses 127.0.0.1:{primary_port} 127.0.0.1:{secondary.port}",
                    "round_robin false",
                    "remote_clientid edge",
                    "restart_timeout 1",
                    "topic rr/# out 1",
                    "connection once",
                    f"address 127.0.0.1:{primary_port}",
                    "remote_clientid edge-once",
                    "start_type once",
                    "restart_timeout 1",
                    "topic once/# out 1",
                ]
            )
            + "\n"
        )
        with running(edge_conf) as edge:
            wait_state(at_secondary, "$SYS/broker/connection/edge/state", b"1")
            primary_config = Config(
                listeners=[ListenerConfig(port=primary_port, host="127.0.0.1")], sys_interval=0
            )
            primary = RunningBroker(primary_config)
            try:
                at_primary = Sub(primary.port, ["rr/#", "once/#", "$SYS/broker/connection/#"])
                wait_state(at_primary, "$SYS/broker/connection/edge/state", b"1", timeout=10)
                wait_state(at_secondary, "$SYS/broker/connection/edge/state", b"0", timeout=5)
                at_edge = Sub(edge.port, [])
                at_edge.publish("rr/x", b"to the primary")
                at_edge.publish("once/x", b"never")
                assert at_primary.get().payload == b"to the primary"
                with pytest.raises(queue.Empty):  # the once bridge stays down
                    print(at_primary.get(2.5).payload)
                at_edge.close()
                at_primary.close()
            finally:
                primary.stop()
        at_secondary.close()


def test_bridge_attempt_unsubscribe() -> None:
    """A persistent remote session keeps the subscription of a pattern that was ``both`` and is
    now ``out`` only: bridge_attempt_unsubscribe false leaves it there; the default (true)
    unsubscribes it at connection, as Mosquitto does."""
    with running(Config()) as central:
        core = central.server.broker
        assert core is not None
        at_central = Sub(central.port, ["$SYS/broker/connection/#"])

        def filters() -> set[str]:
            session = core.sessions.get("edge")
            return set(session.subscriptions) if session is not None else set()

        for step, (direction, unsubscribe, expected) in enumerate(
            [("both", "true", {"x/#"}), ("out", "false", {"x/#"}), ("out", "true", set())]
        ):
            edge_conf = parse_mosquitto_conf(
                "\n".join(
                    [
                        "connection central",
                        f"address 127.0.0.1:{central.port}",
                        "remote_clientid edge",
                        "cleansession false",
                        f"bridge_attempt_unsubscribe {unsubscribe}",
                        f"topic x/# {direction} 1",
                        "topic other/# in 1",
                    ]
                )
                + "\n"
            )
            with running(edge_conf):
                wait_state(at_central, "$SYS/broker/connection/edge/state", b"1")
                deadline = time.monotonic() + 5
                while central.call(filters) != expected | {"other/#"}:
                    assert time.monotonic() < deadline, (step, central.call(filters))
                    time.sleep(0.05)
                time.sleep(0.5)  # and stays so (no unsubscription comes late)
                assert central.call(filters) == expected | {"other/#"}, step
            wait_state(at_central, "$SYS/broker/connection/edge/state", b"0")
        at_central.close()
