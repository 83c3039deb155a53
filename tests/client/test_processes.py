"""midge.client against brokers in processes of their own: the real Mosquitto (Debian) and
``midge broker`` with its durable store, killed in the middle of QoS 2 flows. Few processes:
each test groups its checks around one or two brokers."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from midge.client import Backoff, Client, MQTTError, Reason
from tests.client.test_client import run, take
from tests.differential.harness import mosquitto, needs_mosquitto
from tests.procbroker import ProcBroker, free_port

pytestmark = pytest.mark.timeout(90)


@needs_mosquitto
def test_against_mosquitto_qos_both_ways_resume_and_takeover() -> None:
    with mosquitto(["allow_anonymous true"]) as port:

        async def main() -> None:
            for version in (4, 5):
                async with (
                    Client("127.0.0.1", port, version=version) as sub,
                    Client("127.0.0.1", port, version=version) as pub,
                ):
                    await sub.subscribe("m/#", qos=2)
                    for qos in (0, 1, 2):
                        result = await pub.publish(f"m/{qos}", b"v%d" % qos, qos=qos)
                        assert result.reason_code in (0, 0x10)
                    # Again: in MQTT 5 only the topic alias travels (Mosquitto grants 10).
                    await pub.publish("m/1", b"again", qos=1)
                    got = await take(sub.messages(), 4)
                    assert [(m.topic, m.payload, m.qos) for m in got] == [
                        ("m/0", b"v0", 0),
                        ("m/1", b"v1", 1),
                        ("m/2", b"v2", 2),
                        ("m/1", b"again", 1),
                    ]
                    link = pub._link
                    assert link is not None
                    assert ("m/1" in link.aliases_out) == (version == 5)
            # A persistent session: queued QoS 1/2 messages arrive on resume.
            opts = {"client_id": "mq-keeper", "clean_start": False, "session_expiry": 600}
            keeper = Client("127.0.0.1", port, **opts)  # type: ignore[arg-type]
            await keeper.connect()
            await keeper.subscribe("keep/#", qos=2)
            await keeper.disconnect()
            async with Client("127.0.0.1", port) as pub:
                await pub.publish("keep/a", b"1", qos=1)
                await pub.publish("keep/b", b"2", qos=2)
            async with Client("127.0.0.1", port, **opts) as again:  # type: ignore[arg-type]
                assert again.connack is not None and again.connack.session_present
                got = await take(again.messages(), 2)
                assert [m.payload for m in got] == [b"1", b"2"]
                # Request/response through Mosquitto.
                async with again.subscription("svc/echo", qos=1) as requests:

                    async def serve() -> None:
                        async for request in requests:
                            await again.respond(request, request.payload.upper())

                    server = asyncio.create_task(serve())
                    async with Client("127.0.0.1", port) as caller:
                        answer = await caller.request("svc/echo", b"hello")
                        assert answer.payload == b"HELLO"
                    server.cancel()
            # Taken over: Mosquitto 2.0.11 closes the first connection without a DISCONNECT
            # (midge sends 0x8E), so without reconnecting it ends as a lost connection (0x80).
            first = Client("127.0.0.1", port, reconnect=False, **opts)  # type: ignore[arg-type]
            async with first, Client("127.0.0.1", port, **opts):  # type: ignore[arg-type]
                with pytest.raises(MQTTError) as exc:
                    await take(first.messages(), 1)
                assert exc.value.reason_code == Reason.UNSPECIFIED_ERROR

        run(main(), timeout=30)


@needs_mosquitto
def test_mosquitto_over_a_unix_socket() -> None:
    # Mosquitto drops root to its own user: the socket's directory must be open to it.
    directory = Path(tempfile.mkdtemp(prefix="midge-unix-"))
    directory.chmod(0o777)
    path = directory / "mqtt.sock"
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, directory, True)
        stack.enter_context(mosquitto(["allow_anonymous true", f"listener 0 {path}"]))

        async def main() -> None:
            async with Client(unix_path=str(path)) as client:
                await client.subscribe("unix", qos=1)
                await client.publish("unix", b"local", qos=1)
                (message,) = await take(client.messages(), 1)
                assert message.payload == b"local"

        run(main())


@needs_mosquitto
def test_mosquitto_refusals_carry_the_code() -> None:
    with mosquitto(["allow_anonymous false"]) as port:

        async def main() -> None:
            with pytest.raises(MQTTError) as exc:
                await Client("127.0.0.1", port).connect()
            assert exc.value.reason_code == Reason.NOT_AUTHORIZED
            with pytest.raises(MQTTError) as exc:
                await Client("127.0.0.1", port, version=4).connect()
            assert (exc.value.return_code, exc.value.reason_code) == (5, Reason.NOT_AUTHORIZED)

        run(main())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_broker_restart_in_qos2_flows_exactly_once_nothing_lost(tmp_path: Path, sig: int) -> None:
    """``midge broker`` (durable SQLite store) is stopped (SIGTERM) or killed (SIGKILL) while
    300 QoS 2 messages are between a persistent publisher and a persistent subscriber, and started
    again on the same port and data directory. Both clients reconnect, resume their sessions and
    finish their flows: every publish completes and no message is lost.

    Exactly once: after SIGTERM for every message; after SIGKILL for every message the broker
    had acknowledged (PUBREC) before it died. midge routes a message before its store has it
    (the PUBREC waits for the store), so a message it forwarded but had not yet made durable
    is, after the crash, sent again by the publisher (it never got PUBREC) and routed again as a
    new message: at least once for those (recorded in docs/client.md)."""
    port = free_port()
    args = ["--host", "127.0.0.1", "--port", str(port)]
    count = 300

    def start() -> ProcBroker:
        broker = ProcBroker(args, cwd=tmp_path)
        broker.wait_listening()
        return broker

    first = start()
    brokers = [first]
    try:

        async def main() -> None:
            backoff = Backoff(initial=0.05, maximum=0.3)
            common = {"clean_start": False, "session_expiry": 3600, "reconnect": backoff}
            sub = Client("127.0.0.1", port, client_id="eo-sub", **common)  # type: ignore[arg-type]
            pub = Client("127.0.0.1", port, client_id="eo-pub", **common)  # type: ignore[arg-type]
            async with sub, pub:
                await sub.subscribe("eo/#", qos=2)
                received: list[bytes] = []

                async def consume() -> None:
                    async for message in sub.messages():
                        received.append(message.payload)

                consumer = asyncio.create_task(consume())
                sends = [
                    asyncio.create_task(pub.publish(f"eo/{i % 7}", b"%d" % i, qos=2))
                    for i in range(count)
                ]
                while sum(s.done() for s in sends) < count // 3:
                    await asyncio.sleep(0.005)
                first.send_signal(sig)
                # What the broker has acknowledged: completed flows and PUBREC'd ones.
                acknowledged = {b"%d" % i for i, s in enumerate(sends) if s.done()} | {
                    e.publish.payload for e in pub._session.outgoing.values() if e.phase == "pubrel"
                }
                await asyncio.to_thread(first.proc.wait, 10)
                assert len(acknowledged) < count, "the restart came after every flow had finished"
                brokers.append(await asyncio.to_thread(start))
                results = await asyncio.wait_for(asyncio.gather(*sends), 30)
                assert all(r.reason_code == 0 for r in results)
                for _ in range(200):
                    if len(set(received)) >= count:
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.5)  # a duplicate would arrive by now
                consumer.cancel()
                assert sorted({int(p) for p in received}) == list(range(count))  # none lost
                twice = {p for p in received if received.count(p) > 1}
                if sig == signal.SIGTERM:
                    assert not twice
                else:
                    assert not twice & acknowledged

        run(main(), timeout=60)
    finally:
        for broker in brokers:
            broker.close()


@needs_mosquitto
def test_mqtt31_against_mosquitto_with_the_packet_hook() -> None:
    """Client(version=3) speaks MQTT 3.1 ("MQIsdp", level 3) to the real Mosquitto: QoS 0-2 both
    ways and a persistent session resumed; the packet hook sees every packet either way."""
    from midge.codec.packets import Connack, Connect, Packet, Pubcomp, Publish, Pubrel

    seen: list[tuple[bool, Packet]] = []
    with mosquitto(["allow_anonymous true"]) as port:

        async def main() -> None:
            async with (
                Client("127.0.0.1", port, version=3) as sub,
                Client(
                    "127.0.0.1", port, version=3, packet_hook=lambda s, p: seen.append((s, p))
                ) as pub,
            ):
                assert len(sub.client_id) == 23 and sub.client_id.startswith("midge-")
                await sub.subscribe("v31/#", qos=2)
                for qos in (0, 1, 2):
                    await pub.publish(f"v31/{qos}", f"at {qos}", qos=qos)
                got = await take(sub.messages(), 3)
                assert [(m.topic, m.payload, m.qos) for m in got] == [
                    ("v31/0", b"at 0", 0), ("v31/1", b"at 1", 1), ("v31/2", b"at 2", 2)
                ]  # fmt: skip
            persistent = Client(
                "127.0.0.1", port, version=3, client_id="v31-keep", clean_start=False
            )
            async with persistent:
                await persistent.subscribe("keep", qos=1)
            async with Client("127.0.0.1", port, version=3) as other:
                await other.publish("keep", b"while away", qos=1)
            async with persistent:
                assert persistent.connack is not None and persistent.connack.session_present
                (message,) = await take(persistent.messages(), 1)
                assert message.payload == b"while away"

        run(main())
    sent = [p for s, p in seen if s]
    received = [p for s, p in seen if not s]
    connect = sent[0]
    assert isinstance(connect, Connect)
    assert (connect.protocol_name, connect.protocol_level) == ("MQIsdp", 3)
    assert isinstance(received[0], Connack) and received[0].reason_code == 0
    assert [p.qos for p in sent if isinstance(p, Publish)] == [0, 1, 2]
    assert any(isinstance(p, Pubrel) for p in sent) and any(
        isinstance(p, Pubcomp) for p in received
    )
