"""midge.client against midge on a real socket (the ``make_broker`` fixture: a Server in a
thread), and against a scripted server (tests/client/scripted.py) for the codes no broker sends
on demand. Each test runs its own event loop (``run``) under a bounded time."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from midge.auth.passwd import hash_password
from midge.auth.scram_cli import set_user
from midge.client import (
    Backoff,
    Client,
    MQTTError,
    Prop,
    Reason,
    ScramAuth,
    SqliteSessionStore,
    parse_server_reference,
)
from midge.codec.packets import Connack, Connect, Disconnect, Packet, Puback, Publish, Subscribe
from midge.codec.reasons import REASONS_BY_PACKET
from midge.config import Config, ListenerConfig
from tests.client.scripted import ScriptedServer
from tests.conftest import RunningBroker

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")
MakeBroker = Callable[..., RunningBroker]


def run(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def take(iterator: Any, n: int, timeout: float = 5.0) -> list[Any]:
    async def collect() -> list[Any]:
        out = []
        async for message in iterator:
            out.append(message)
            if len(out) == n:
                break
        return out

    return await asyncio.wait_for(collect(), timeout)


@pytest.mark.parametrize("version", [3, 4, 5])
def test_qos_0_1_2_both_ways(broker: RunningBroker, version: int) -> None:
    async def main() -> None:
        async with (
            Client(broker.host, broker.port, version=version) as sub,
            Client(broker.host, broker.port, version=version) as pub,
        ):
            granted = await sub.subscribe(["q/0", "q/1", "q/2"], qos=2)
            assert granted.reason_codes == [2, 2, 2]
            for qos in (0, 1, 2):
                result = await pub.publish(f"q/{qos}", f"payload {qos}", qos=qos)
                assert result.reason_code == 0
                assert (result.packet_id is None) == (qos == 0)
            got = await take(sub.messages(), 3)
            assert [(m.topic, m.payload, m.qos) for m in got] == [
                ("q/0", b"payload 0", 0),
                ("q/1", b"payload 1", 1),
                ("q/2", b"payload 2", 2),
            ]
            for _ in range(100):  # the QoS 2 flow completes (PUBREL, PUBCOMP) after delivery
                if not pub._session.outgoing and not sub._session.incoming:
                    break
                await asyncio.sleep(0.01)
            assert not pub._session.outgoing and not sub._session.incoming

    run(main())


def test_persistent_session_resumes_and_gets_what_was_queued(broker: RunningBroker) -> None:
    async def main() -> None:
        sub = Client(
            broker.host, broker.port, client_id="keeper", clean_start=False, session_expiry=300
        )
        first = await sub.connect()
        assert not first.session_present
        await sub.subscribe("kept/#", qos=2)
        await sub.disconnect()
        async with Client(broker.host, broker.port) as pub:
            for i in range(5):
                await pub.publish(f"kept/{i}", b"%d" % i, qos=1 + i % 2)
        again = Client(
            broker.host, broker.port, client_id="keeper", clean_start=False, session_expiry=300
        )
        async with again:
            assert again.connack is not None and again.connack.session_present
            got = await take(again.messages(), 5)
            assert [m.payload for m in got] == [b"0", b"1", b"2", b"3", b"4"]

    run(main())


def test_reconnect_restores_subscriptions_when_the_server_lost_the_session(
    make_broker: MakeBroker,
) -> None:
    """The broker restarts (in memory: the session is gone); the client reconnects with
    backoff, sees Session Present 0 and subscribes again; a publish made while it was away waits
    for the connection and completes."""
    first = make_broker()
    port = first.port

    async def main() -> None:
        backoff = Backoff(initial=0.05, maximum=0.2)
        async with Client("127.0.0.1", port, client_id="phoenix", reconnect=backoff) as c:
            await c.subscribe("back/#", qos=1)
            await asyncio.to_thread(first.stop)
            await asyncio.sleep(0.2)
            assert not c.connected
            again = await asyncio.to_thread(
                RunningBroker, Config(listeners=[ListenerConfig(port=port, host="127.0.0.1")])
            )
            try:
                result = await c.publish("back/1", b"after", qos=1)  # waits for the reconnect
                assert result.reason_code == 0
                assert c.connack is not None and not c.connack.session_present
                (message,) = await take(c.messages(), 1)
                assert (message.topic, message.payload) == ("back/1", b"after")
            finally:
                await c.disconnect()
                await asyncio.to_thread(again.stop)

    run(main())


def test_mqtt5_topic_aliases_receive_maximum_and_user_properties(make_broker: MakeBroker) -> None:
    """midge grants receive maximum 5 and topic alias maximum 3: 40 concurrent QoS 1 publishes
    all complete (one more in flight would be a 0x93 disconnect), the topics travel as aliases
    after the first time, and a subscriber that accepts 2 in flight gets every message."""
    broker = make_broker(max_inflight_messages=2, max_topic_alias=3)

    async def main() -> None:
        async with (
            Client(broker.host, broker.port, receive_maximum=2, topic_alias_maximum=4) as sub,
            Client(broker.host, broker.port) as pub,
        ):
            assert pub.connack is not None
            await sub.subscribe("alias/#", qos=1)
            results = await asyncio.gather(
                *(
                    pub.publish(f"alias/{i % 4}", b"%d" % i, qos=1, user_properties=[("n", str(i))])
                    for i in range(40)
                )
            )
            assert all(r.reason_code == 0 for r in results)
            link = pub._link
            assert link is not None and link.topic_alias_maximum == 3
            assert link.receive_maximum == 2
            assert sorted(link.aliases_out) == ["alias/0", "alias/1", "alias/2"]
            got = await take(sub.messages(), 40)
            assert sorted(int(m.payload) for m in got) == list(range(40))
            assert all(m.topic == f"alias/{int(m.payload) % 4}" for m in got)
            assert all(m.user_properties == [("n", m.payload.decode())] for m in got)
            assert Prop.TOPIC_ALIAS not in got[-1].properties
            assert sub._link is not None and sorted(sub._link.aliases_in.values()) == [
                "alias/0",
                "alias/1",
                "alias/2",
                "alias/3",
            ]  # midge sent them aliased (the subscriber accepts 4)

    run(main())


def test_maximum_packet_size_is_obeyed_both_ways(make_broker: MakeBroker) -> None:
    broker = make_broker(max_packet_size=200)

    async def main() -> None:
        async with Client(broker.host, broker.port, maximum_packet_size=300) as c:
            with pytest.raises(MQTTError) as exc:
                await c.publish("big", b"x" * 500, qos=1)
            assert exc.value.reason_code == Reason.PACKET_TOO_LARGE
            await c.subscribe("small", qos=1)
            assert (await c.publish("small", b"fits", qos=1)).reason_code == 0
            (message,) = await take(c.messages(), 1)
            assert message.payload == b"fits"
            assert c.connected

    run(main())


def test_request_response_and_subscription_identifiers(broker: RunningBroker) -> None:
    async def main() -> None:
        async with (
            Client(broker.host, broker.port, client_id="svc") as service,
            Client(broker.host, broker.port, client_id="caller") as caller,
            service.subscription("rpc/add", qos=1) as requests,
        ):

            async def serve() -> None:
                async for request in requests:
                    a, b = request.payload.split(b"+")
                    await service.respond(request, b"%d" % (int(a) + int(b)))

            server = asyncio.create_task(serve())
            answers = await asyncio.gather(
                caller.request("rpc/add", b"1+2"), caller.request("rpc/add", b"20+22")
            )
            assert [a.payload for a in answers] == [b"3", b"42"]
            server.cancel()

            # Overlapping filters: each subscription's iterator gets its own messages.
            async with (
                caller.subscription("over/#") as wide,
                caller.subscription("over/narrow") as narrow,
            ):
                await service.publish("over/narrow", b"both")
                await service.publish("over/wide", b"wide only")
                got = await take(wide, 2)
                assert [m.payload for m in got] == [b"both", b"wide only"]
                (n,) = await take(narrow, 1)
                # midge (as Mosquitto) sends an MQTT 5 client one copy per matching subscription,
                # each with its own identifier: each iterator gets the copy carrying its own.
                assert n.payload == b"both" and len(n.subscription_identifiers) == 1
                assert n.subscription_identifiers != got[0].subscription_identifiers

    run(main())


def test_shared_subscription_splits_the_messages(broker: RunningBroker) -> None:
    async def main() -> None:
        async with (
            Client(broker.host, broker.port) as a,
            Client(broker.host, broker.port) as b,
            Client(broker.host, broker.port) as pub,
        ):
            await a.subscribe("$share/workers/jobs", qos=1)
            await b.subscribe("$share/workers/jobs", qos=1)
            for i in range(10):
                await pub.publish("jobs", b"%d" % i, qos=1)
            await asyncio.sleep(0.3)
            counts = [a._main._items, b._main._items]  # type: ignore[union-attr]
            assert sum(len(q) for q in counts) == 10 and all(counts)

    run(main())


def test_back_pressure_a_full_inbox_stops_reading_and_loses_nothing(
    broker: RunningBroker,
) -> None:
    async def main() -> None:
        async with (
            Client(broker.host, broker.port, queue_size=2) as slow,
            Client(broker.host, broker.port) as pub,
        ):
            await slow.subscribe("flood", qos=1)
            for i in range(30):
                await pub.publish("flood", b"%d" % i, qos=1)
            await asyncio.sleep(0.2)
            assert slow._main is not None and len(slow._main._items) == 2  # bounded
            got = []
            async for message in slow.messages():
                got.append(int(message.payload))
                await asyncio.sleep(0.001)
                if len(got) == 30:
                    break
            assert got == list(range(30))

    run(main())


def test_scram_enhanced_authentication(make_broker: MakeBroker, tmp_path: Path) -> None:
    path = str(tmp_path / "users.scram")
    set_user(path, "alice", "wonderland", create=True)
    set_user(path, "bob", "builder", ["SCRAM-SHA-512"])
    broker = make_broker(scram_file=path)

    async def main() -> None:
        for auth in (
            ScramAuth("alice", "wonderland"),
            ScramAuth("bob", "builder", "SCRAM-SHA-512"),
        ):
            async with Client(broker.host, broker.port, auth=auth, reconnect=False) as c:
                await c.subscribe("ok")
        with pytest.raises(MQTTError) as exc:
            await Client(broker.host, broker.port, auth=ScramAuth("alice", "wrong")).connect()
        assert exc.value.reason_code == Reason.NOT_AUTHORIZED
        # Re-authentication on the open connection (AUTH 0x19), then with a wrong password.
        client = Client(broker.host, broker.port, auth=ScramAuth("alice", "wonderland"))
        async with client:
            await client.reauthenticate()
            assert (await client.publish("still", b"", qos=1)).reason_code == 0x10
            client.auth = ScramAuth("alice", "not any more")
            with pytest.raises(MQTTError) as exc:
                await client.reauthenticate()
            assert exc.value.reason_code == Reason.NOT_AUTHORIZED
            assert not client.connected

    run(main())


def test_refusals_and_takeover_by_midge_carry_the_reason(
    make_broker: MakeBroker, tmp_path: Path
) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text(f"user:{hash_password(b'secret').encode()}\n")
    broker = make_broker(password_file=str(passwd), allow_anonymous=False, local_only=False)

    async def main() -> None:
        with pytest.raises(MQTTError) as exc:
            await Client(broker.host, broker.port, username="user", password="nope").connect()
        # 0x87 for a wrong password, as Mosquitto answers
        assert exc.value.reason_code == Reason.NOT_AUTHORIZED
        assert exc.value.packet == "CONNACK"
        with pytest.raises(MQTTError) as exc:
            await Client(broker.host, broker.port, version=4).connect()
        assert exc.value.return_code == 5 and exc.value.reason_code == Reason.NOT_AUTHORIZED
        # Session taken over: the first client ends with 0x8E (no reconnect fight).
        first = Client(
            broker.host, broker.port, client_id="twin", username="user", password="secret"
        )
        async with (
            first,
            Client(broker.host, broker.port, client_id="twin", username="user", password="secret"),
        ):
            with pytest.raises(MQTTError) as exc:
                await take(first.messages(), 1)
            assert exc.value.reason_code == Reason.SESSION_TAKEN_OVER
            assert exc.value.packet == "DISCONNECT"
            with pytest.raises(MQTTError):
                await first.publish("t", b"x")

    run(main())


def test_every_connack_refusal_and_disconnect_reason_is_carried() -> None:
    async def main() -> None:
        refusals = sorted(REASONS_BY_PACKET[2] - {0})
        for code in refusals:
            props = {Prop.REASON_STRING: f"no {code}"}

            def refuse(p: Packet, code: int = code, props: Any = props) -> list[Packet]:
                return [Connack(False, code, props)]

            async with ScriptedServer(refuse) as server:
                with pytest.raises(MQTTError) as exc:
                    await Client("127.0.0.1", server.port, reconnect=False).connect()
            assert (exc.value.reason_code, exc.value.reason_string) == (code, f"no {code}")
        for v3_code, v5_code in [(1, 0x84), (2, 0x85), (3, 0x88), (4, 0x86), (5, 0x87)]:

            def refuse_v3(p: Packet, code: int = v3_code) -> list[Packet]:
                return [Connack(False, code)]

            async with ScriptedServer(refuse_v3, version=4) as server:
                with pytest.raises(MQTTError) as exc:
                    await Client("127.0.0.1", server.port, version=4).connect()
            assert (exc.value.return_code, exc.value.reason_code) == (v3_code, v5_code)
        for code in sorted(REASONS_BY_PACKET[14] - {0, 4}):

            def drop(p: Packet, code: int = code) -> list[Packet]:
                if isinstance(p, Connect):
                    return [Connack(), Disconnect(code, {Prop.REASON_STRING: "bye"})]
                return []

            async with ScriptedServer(drop) as server:
                client = Client("127.0.0.1", server.port, reconnect=False)
                async with client:
                    with pytest.raises(MQTTError) as exc:
                        await take(client.messages(), 1)
            assert (exc.value.reason_code, exc.value.packet) == (code, "DISCONNECT")

    run(main(), timeout=40)


def test_server_redirection_error_or_followed(broker: RunningBroker) -> None:
    reference = f"127.0.0.1:{broker.port}"

    def redirect(p: Packet) -> list[Packet]:
        return [Connack(False, Reason.USE_ANOTHER_SERVER, {Prop.SERVER_REFERENCE: reference})]

    async def main() -> None:
        async with ScriptedServer(redirect) as server:
            with pytest.raises(MQTTError) as exc:
                await Client("127.0.0.1", server.port).connect()
            assert exc.value.reason_code == 0x9C and exc.value.server_reference == reference
            client = Client("127.0.0.1", server.port, follow_redirects=True)
            async with client:
                assert client.port == broker.port
                assert (await client.publish("moved", b"", qos=1)).reason_code == 0x10

    assert parse_server_reference("[::1]:1884 other:1", 1883) == ("::1", 1884)
    assert parse_server_reference("host", 1883) == ("host", 1883)
    run(main())


def test_sqlite_store_keeps_in_flight_messages_across_a_client_restart(
    broker: RunningBroker, tmp_path: Path
) -> None:
    """A server that never acknowledges holds a QoS 1 and a QoS 2 message in flight; the client
    process "restarts" (a new Client on the same SQLite file) against midge and delivers them."""

    def silent(p: Packet) -> list[Packet]:
        if isinstance(p, Connect):
            return [Connack(False, 0, {Prop.RECEIVE_MAXIMUM: 10})]
        return []

    db = str(tmp_path / "session.db")

    async def main() -> None:
        async with ScriptedServer(silent) as server:
            store = SqliteSessionStore(db)
            client = Client(
                "127.0.0.1",
                server.port,
                client_id="durable",
                clean_start=False,
                session_expiry=3600,
                session_store=store,
            )
            async with client:
                pending = [
                    asyncio.create_task(client.publish("stored/1", b"one", qos=1)),
                    asyncio.create_task(client.publish("stored/2", b"two", qos=2)),
                ]
                await asyncio.sleep(0.2)
            for task in pending:
                with pytest.raises(MQTTError):
                    await task
            assert [type(p) for p in server.received][:3] == [Connect, Publish, Publish]
            store.close()
        async with Client(broker.host, broker.port) as watcher:
            await watcher.subscribe("stored/#", qos=2)
            store = SqliteSessionStore(db)
            assert len(store.load("durable").outgoing) == 2
            restarted = Client(
                broker.host,
                broker.port,
                client_id="durable",
                clean_start=False,
                session_expiry=3600,
                session_store=store,
            )
            async with restarted:
                got = await take(watcher.messages(), 2)
                assert sorted(m.payload for m in got) == [b"one", b"two"]
                for _ in range(50):
                    if not store.load("durable").outgoing:
                        break
                    await asyncio.sleep(0.02)
                assert not store.load("durable").outgoing
            store.close()

    run(main())


def test_incoming_qos2_resent_by_the_server_is_delivered_once() -> None:
    """The server resends a QoS 2 PUBLISH (DUP) before PUBREL: one delivery (MQTT 4.3.3)."""
    twice = Publish("x", b"once", 2, False, False, 7)

    def script(p: Packet) -> list[Packet]:
        if isinstance(p, Connect):
            dup = Publish("x", b"once", 2, False, True, 7)
            return [Connack(), twice, dup, Publish("y", b"after", 1, False, False, 8)]
        return []

    async def main() -> None:
        async with ScriptedServer(script) as server, Client("127.0.0.1", server.port) as c:
            got = await take(c.messages(), 2)
            assert [m.payload for m in got] == [b"once", b"after"]
            await asyncio.sleep(0.1)
            kinds = [type(p).__name__ for p in server.received[1:]]
            assert kinds == ["Pubrec", "Pubrec", "Puback"]
            assert isinstance(server.received[-1], Puback)
            assert not any(isinstance(p, Subscribe) for p in server.received)

    run(main())


def test_tls_with_a_client_certificate(make_broker: MakeBroker, tmp_path: Path) -> None:
    from tests.security.certs import Pki, name

    pki = Pki(tmp_path)
    cert = pki.client("alice", name(("CN", "alice")))
    broker = make_broker(
        listeners=[
            ListenerConfig(
                port=0,
                host="127.0.0.1",
                certfile=pki.server_cert,
                keyfile=pki.server_key,
                cafile=pki.cafile,
                require_certificate=True,
                use_identity_as_username=True,
            )
        ]
    )

    async def main() -> None:
        context = ssl.create_default_context(cafile=pki.cafile)
        context.load_cert_chain(*cert)
        async with Client(broker.host, broker.port, tls=context) as c:
            await c.subscribe("tls", qos=1)
            await c.publish("tls", b"secure", qos=1)
            (message,) = await take(c.messages(), 1)
            assert message.payload == b"secure"
        bare = ssl.create_default_context(cafile=pki.cafile)
        with pytest.raises(MQTTError):
            await Client(broker.host, broker.port, tls=bare, reconnect=False).connect()

    run(main())


def test_a_server_over_our_receive_maximum_is_disconnected_with_0x93() -> None:
    """Three QoS 2 messages never released, to a client that accepts 2 in flight."""

    def script(p: Packet) -> list[Packet]:
        if isinstance(p, Connect):
            return [Connack(), *(Publish(f"t/{i}", b"", 2, False, False, i) for i in (1, 2, 3))]
        return []

    async def main() -> None:
        async with ScriptedServer(script) as server:
            client = Client("127.0.0.1", server.port, receive_maximum=2, reconnect=False)
            async with client:
                with pytest.raises(MQTTError) as exc:
                    await take(client.messages(), 3)
                assert exc.value.reason_code == Reason.RECEIVE_MAXIMUM_EXCEEDED
            await asyncio.sleep(0.05)
            sent = server.received[-1]
            assert isinstance(sent, Disconnect) and sent.reason_code == 0x93

    run(main())


def test_maximum_qos_and_retain_available_are_obeyed(make_broker: MakeBroker) -> None:
    broker = make_broker(max_qos=1, retain_available=False)

    async def main() -> None:
        async with Client(broker.host, broker.port) as c:
            with pytest.raises(MQTTError) as exc:
                await c.publish("q", b"", qos=2)
            assert exc.value.reason_code == Reason.QOS_NOT_SUPPORTED
            with pytest.raises(MQTTError) as exc:
                await c.publish("r", b"", retain=True)
            assert exc.value.reason_code == Reason.RETAIN_NOT_SUPPORTED
            assert (await c.publish("q", b"", qos=1)).reason_code == 0x10

    run(main())


def test_keep_alive_pings_and_a_silent_server_times_out(broker: RunningBroker) -> None:
    """Idle for 2.5 keep-alive periods, the client stays connected (it pings); a server that
    answers nothing after CONNACK is given up with 0x8D Keep alive timeout."""

    def mute(p: Packet) -> list[Packet]:
        return [Connack()] if isinstance(p, Connect) else []

    async def main() -> None:
        async with Client(broker.host, broker.port, keep_alive=1, reconnect=False) as c:
            await asyncio.sleep(2.5)
            assert c.connected
            assert (await c.publish("alive", b"", qos=1)).reason_code == 0x10
        async with ScriptedServer(mute) as server:
            client = Client("127.0.0.1", server.port, keep_alive=1, reconnect=False)
            async with client:
                with pytest.raises(MQTTError) as exc:
                    await take(client.messages(), 1, timeout=6)
                assert exc.value.reason_code == Reason.KEEP_ALIVE_TIMEOUT
            assert any(type(p).__name__ == "Pingreq" for p in server.received)

    run(main())


@pytest.mark.parametrize("session_present", [True, False])
def test_in_flight_messages_after_a_reconnect(session_present: bool) -> None:
    """The first connection takes a QoS 1 and a QoS 2 PUBLISH, answers PUBREC to the QoS 2 one
    and drops. On the second: with the session resumed the client resends the QoS 1 PUBLISH with
    DUP and the PUBREL (MQTT-4.4.0-1); with the session lost it sends the QoS 1 message again as
    new and counts the QoS 2 one as delivered (the server had it at PUBREC)."""
    from midge.codec.packets import Pubcomp, Pubrec, Pubrel

    state = {"connections": 0}

    def script(p: Packet) -> list[Packet] | None:
        if isinstance(p, Connect):
            state["connections"] += 1
            return [Connack(state["connections"] > 1 and session_present, 0)]
        if state["connections"] == 1:
            if isinstance(p, Publish) and p.qos == 2:
                return [Pubrec(p.packet_id or 0)]
            if isinstance(p, Pubrel):
                return None  # drop the connection before PUBCOMP
            return []
        if isinstance(p, Publish):
            return [Puback(p.packet_id or 0)]
        if isinstance(p, Pubrel):
            return [Pubcomp(p.packet_id)]
        return []

    async def main() -> None:
        async with ScriptedServer(script) as server:
            backoff = Backoff(initial=0.01, maximum=0.05)
            client = Client(
                "127.0.0.1",
                server.port,
                client_id="c",
                clean_start=False,
                session_expiry=60,
                reconnect=backoff,
            )
            async with client:
                one = asyncio.create_task(client.publish("one", b"1", qos=1))
                await asyncio.sleep(0.05)
                two = await client.publish("two", b"2", qos=2)
                assert two.reason_code == 0
                assert (await one).reason_code == 0
            connects = [i for i, p in enumerate(server.received) if isinstance(p, Connect)]
            assert len(connects) == 2
            second = server.received[connects[1] + 1 :]
            if session_present:
                assert [type(p).__name__ for p in second][:2] == ["Publish", "Pubrel"]
                assert isinstance(second[0], Publish) and second[0].dup
            else:
                assert isinstance(second[0], Publish) and not second[0].dup
                assert second[0].topic == "one"
                assert not any(isinstance(p, Pubrel) for p in second)

    run(main())


@pytest.mark.parametrize("version", [4, 5])
def test_a_handler_that_publishes_while_its_inbox_is_full_does_not_deadlock(
    broker: RunningBroker, version: int
) -> None:
    """The command handler pattern with a tiny inbox under a flood: for each command it awaits
    its own QoS 1 reply's PUBACK, which arrives behind more commands. QoS 1/2 messages wait
    (unacknowledged, so the server's window bounds them) and the reader goes on reading acks;
    QoS 0 ones beyond the bound are dropped, counted, while the handler waits."""

    async def main() -> None:
        async with (
            Client(broker.host, broker.port, version=version, queue_size=2) as handler,
            Client(broker.host, broker.port, version=version) as flood,
        ):
            await handler.subscribe("cmd/#", qos=1)
            for i in range(100):
                await flood.publish("cmd/1", b"%d" % i, qos=1)
                await flood.publish("cmd/0", b"%d" % i, qos=0)
            handled: list[int] = []
            qos0 = 0
            async for command in handler.messages():
                if command.qos == 0:
                    qos0 += 1
                    continue
                await handler.publish("replies", command.payload, qos=1)
                handled.append(int(command.payload))
                if len(handled) == 100:
                    break
            assert handled == list(range(100))
            assert qos0 + handler.dropped <= 100

    run(main(), timeout=30)


def test_mqtt_3_1(broker: RunningBroker) -> None:
    """``version=3``: MQTT 3.1 ("MQIsdp", level 3), what a bridge with bridge_protocol_version
    mqttv31 speaks: connect (the broker's session says level 3), subscribe, QoS 0-2 both ways."""

    async def main() -> None:
        async with Client(broker.host, broker.port, version=3, client_id="old-timer") as c:
            assert c.connack is not None and c.connack.reason_code == 0
            assert broker.server.broker is not None
            assert broker.server.broker.sessions["old-timer"].version == 3
            await c.subscribe("v31/#", qos=2)
            for qos in (0, 1, 2):
                await c.publish("v31/x", b"%d" % qos, qos)
            got = []
            async for m in c.messages():
                got.append((m.payload, m.qos))
                if len(got) == 3:
                    break
            assert got == [(b"0", 0), (b"1", 1), (b"2", 2)]

    run(main())
