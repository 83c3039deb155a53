"""``midge pub``, ``midge sub`` and ``midge rr`` on :mod:`midge.client`.

Exit codes are mosquitto's: 0 success; 1 a bad command line or a connection that could not be
made; a refused CONNECT exits with its return code (MQTT 3.1.1, 1-5) or reason code (MQTT 5, e.g.
135); ``-W`` running out exits with 27 (MOSQ_ERR_TIMEOUT), after printing ``Timed out``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import ssl
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from midge.build import describe
from midge.client import Backoff, Client, ConnectionLost, Message, MQTTError, Will
from midge.client.socks import ProxyError
from midge.codec.properties import Prop
from midge.codec.reasons import Reason
from midge.codec.topics import topic_matches
from midge.tools.debug import DebugLog
from midge.tools.options import Options, UsageError, parse, usage
from midge.tools.output import render

#: mosquitto's MOSQ_ERR_TIMEOUT.
EXIT_TIMEOUT = 27

_CONNACK_V3 = {
    1: "Connection Refused: unacceptable protocol version.",
    2: "Connection Refused: identifier rejected.",
    3: "Connection Refused: broker unavailable.",
    4: "Connection Refused: bad user name or password.",
    5: "Connection Refused: not authorised.",
}


class _Done(Exception):
    """Stop with this exit code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def main(tool: str, args: list[str]) -> int:
    try:
        opts = parse(tool, args)
    except UsageError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        print(f"\nUse 'midge {tool} --help' to see usage.", file=sys.stderr)
        return 1
    except SystemExit as exc:  # --help, --version: printed, and exit code 1 as Mosquitto's
        if exc.code == "version":
            print(f"midge {tool} version {describe()} running on midge.client.")
        else:
            print(usage(tool), end="")
        return 1
    try:
        opts.tls_context()  # the files are read now: a bad one stops here, as in Mosquitto
    except UsageError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except (OSError, ssl.SSLError) as exc:
        print(f"Error: Problem setting TLS options: {exc}", file=sys.stderr)
        return 1
    run: Callable[[Options], Coroutine[Any, Any, int]] = {"pub": _pub, "sub": _sub, "rr": _rr}[tool]
    try:
        return asyncio.run(run(opts))
    except KeyboardInterrupt:  # pragma: no cover - handled by the signal handlers
        return 0


def _err(opts: Options, text: str) -> None:
    if not opts.quiet:
        print(text, file=sys.stderr, flush=True)


#: libmosquitto's reconnecting (mosquitto_sub): every second, no backoff, no jitter.
RECONNECT = Backoff(initial=1.0, maximum=1.0, factor=1.0, jitter=0.0)


def _client(opts: Options, reconnect: bool) -> Client:
    will = None
    if opts.will_topic is not None:
        will = Will(
            opts.will_topic,
            opts.will_payload or b"",
            opts.will_qos,
            opts.will_retain,
            dict(opts.props("will")),
        )
    connect_props = dict(opts.props("connect"))
    session_expiry = opts.session_expiry
    if session_expiry is None:
        session_expiry = 0xFFFFFFFF if not opts.clean else 0
    connect_props.pop(Prop.SESSION_EXPIRY_INTERVAL, None)
    tls = opts.tls_context()
    if opts.port is not None:
        port = opts.port
    elif opts.ws:
        port = 443 if tls else 80
    else:
        port = 8883 if tls else 1883
    client = Client(
        opts.host,
        port,
        client_id=opts.client_id or "",
        version=opts.version,
        clean_start=opts.clean,
        session_expiry=session_expiry if opts.version == 5 else 0,
        keep_alive=opts.keepalive,
        username=opts.username,
        password=opts.password,
        will=will,
        tls=tls,
        server_hostname=None if tls is None or not opts.insecure else opts.host,
        connect_properties=connect_props,
        reconnect=RECONNECT if reconnect else False,
        reconnect_after_disconnect=False,
        unix_path=opts.unix,
        transport="websockets" if opts.ws else "tcp",
        local_address=opts.bind_address,
        proxy=opts.proxy,
        # libmosquitto's CONNECT: Receive Maximum 20 (-C below 20: that count, so that no more
        # arrive before the tool leaves), no Topic Alias Maximum; its PUBLISH: no Topic Alias.
        receive_maximum=opts.msg_count if 0 < opts.msg_count < 20 else 20,
        topic_alias_maximum=0,
        outgoing_topic_aliases=False,  # libmosquitto sets none on its own
    )
    if opts.debug:
        client.packet_hook = DebugLog(
            lambda: client.client_id, subscribed_lines=opts.tool == "sub" and not opts.quiet
        )
    return client


async def _connect(opts: Options, client: Client) -> None:
    try:
        await client.connect()
    except MQTTError as exc:
        if exc.packet == "CONNACK":
            if opts.version == 5:
                _err(opts, f"Connection error: {_reason_text(exc.reason_code)}")
                raise _Done(exc.reason_code) from None
            code = exc.return_code or 0
            _err(
                opts,
                f"Connection error: {_CONNACK_V3.get(code, 'Connection Refused: unknown reason.')}",
            )
            raise _Done(code) from None
        if isinstance(exc, ProxyError):  # mosquitto: MOSQ_ERR_AUTH (11), MOSQ_ERR_NO_CONN (4)
            _err(opts, "Error: Authorisation failed." if exc.authentication else f"Error: {exc}")
            raise _Done(11 if exc.authentication else 4) from None
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLError):  # the handshake failed (a certificate, a version)
            _err(opts, "Unable to connect (A TLS error occurred.).")
            raise _Done(1) from None
        if client.tls is not None and isinstance(cause, ConnectionResetError | EOFError):
            # Cut off during the handshake (a plain MQTT port): mosquitto's MOSQ_ERR_TLS.
            _err(opts, "Error: A TLS error occurred.")
            raise _Done(8) from None
        if isinstance(cause, OSError) and cause.errno:
            _err(opts, f"Error: {os.strerror(cause.errno)}")  # as mosquitto: "Connection refused"
        else:
            _err(opts, f"Error: {exc}")
        raise _Done(1) from None
    except (OSError, TimeoutError) as exc:
        _err(opts, f"Error: {getattr(exc, 'strerror', None) or exc}")
        raise _Done(1) from None


def _reason_text(code: int) -> str:
    try:
        return Reason(code).name.replace("_", " ").capitalize()
    except ValueError:
        return f"Unknown reason 0x{code:02X}"


def _on_signals(task: asyncio.Task[int]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, task.cancel)


def _write(data: bytes) -> bool:
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except (BrokenPipeError, OSError):
        return False
    return True


# ---------------------------------------------------------------------------------------------
# sub


async def _sub(opts: Options) -> int:
    client = _client(opts, reconnect=True)
    try:
        await _connect(opts, client)
    except _Done as done:
        return done.code
    task = asyncio.current_task()
    assert task is not None
    _on_signals(task)
    try:
        async with asyncio.timeout(opts.timeout or None):
            return await _sub_loop(opts, client)
    except TimeoutError:
        await client.disconnect(Reason.DISCONNECT_WITH_WILL)
        _err(opts, "Timed out")
        return EXIT_TIMEOUT
    except asyncio.CancelledError:  # SIGINT, SIGTERM: as mosquitto_sub, with the will
        await client.disconnect(Reason.DISCONNECT_WITH_WILL)
        return 0
    except _Done as done:
        await client.disconnect(properties=dict(opts.props("disconnect")))
        return done.code
    except MQTTError as exc:
        await client.disconnect()
        if exc.packet == "DISCONNECT":  # the server ended it (MQTT 5): mosquitto_sub exits 0
            return 0
        _err(opts, f"Error: {exc}")
        return 1 if isinstance(exc, ConnectionLost) else 7  # MOSQ_ERR_CONN_LOST


async def _sub_loop(opts: Options, client: Client) -> int:
    """As mosquitto_sub: one SUBSCRIBE with every -t, then the -U UNSUBSCRIBEs at once (not
    waiting for the SUBACK); -E exits at the SUBACK; messages are handled from the SUBACK on,
    whether the UNSUBACKs came or not."""
    sub_props = dict(opts.props("subscribe"))
    ident = sub_props.pop(Prop.SUBSCRIPTION_IDENTIFIER, None)
    subscribing = asyncio.ensure_future(
        client.subscribe(
            opts.topics,
            opts.qos,
            retain_as_published=opts.retain_as_published and opts.version == 5,
            subscription_identifier=ident[0] if isinstance(ident, list) else None,
            properties=sub_props,
        )
    )
    unsubscribing = [
        asyncio.ensure_future(client.unsubscribe(topic, properties=dict(opts.props("unsubscribe"))))
        for topic in opts.unsub_topics
    ]
    for fut in unsubscribing:  # -E may leave before their UNSUBACK: nothing to report then
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
    try:
        await subscribing
    except MQTTError as exc:
        if exc.packet != "SUBACK":
            raise
        if all(code >= 0x80 for code in exc.reason_codes):
            _err(opts, "All subscription requests were denied.")
            raise _Done(0) from None
    if opts.exit_after_sub:
        raise _Done(0)
    count = 0
    async for message in client.messages():
        if opts.retained_only and not message.retain:
            raise _Done(0)
        if message.retain and opts.no_retain:
            continue
        if any(topic_matches(f, message.topic) for f in opts.filter_outs):
            continue
        if opts.remove_retained and message.retain:
            await client.publish(message.topic, b"", 1, True)
        if not _print(opts, message):
            raise _Done(0)
        if opts.msg_count:
            count += 1
            if count == opts.msg_count:
                raise _Done(0)
    return 0


def _print(opts: Options, message: Message) -> bool:
    if opts.random_filter < 10000 and random.randrange(10000) >= opts.random_filter:
        return True
    data, errors = render(message, opts.output)
    for line in errors:
        _err(opts, line)
    return _write(data) if data else True


# ---------------------------------------------------------------------------------------------
# pub


async def _pub(opts: Options) -> int:
    client = _client(opts, reconnect=False)
    try:
        await _connect(opts, client)
    except _Done as done:
        return done.code
    topic = opts.topics[0]
    props = dict(opts.props("publish"))
    try:
        if opts.pub_mode == "l":
            # One line at a time, each awaited (QoS 1/2: acknowledged) before the next is
            # read, as mosquitto_pub -l does in practice: -M's bound (>= 1) always holds.
            loop = asyncio.get_running_loop()
            while True:
                line = await loop.run_in_executor(None, sys.stdin.buffer.readline)
                if not line:
                    break
                await _publish_one(opts, client, topic, line.rstrip(b"\n"), props)
        else:
            payload = b"" if opts.pub_mode == "n" else opts.message
            for n in range(opts.repeat):
                if n and opts.repeat_delay:
                    await asyncio.sleep(opts.repeat_delay)
                await _publish_one(opts, client, topic, payload, props)
    except MQTTError as exc:
        _err(opts, f"Error: {exc}")
        await client.disconnect()
        return 1
    await client.disconnect(properties=dict(opts.props("disconnect")))
    return 0


async def _publish_one(
    opts: Options, client: Client, topic: str, payload: bytes, props: dict[int, object]
) -> None:
    try:
        await client.publish(topic, payload, opts.qos, opts.retain, properties=dict(props))
    except MQTTError as exc:
        if exc.packet in ("PUBACK", "PUBREC"):  # mosquitto_pub's words, then the reason string
            _err(opts, f"Warning: Publish {exc.packet_id} failed: {_reason_text(exc.reason_code)}.")
            if exc.reason_string:
                _err(opts, exc.reason_string)
            return
        raise


# ---------------------------------------------------------------------------------------------
# rr


async def _rr(opts: Options) -> int:
    client = _client(opts, reconnect=False)
    try:
        await _connect(opts, client)
    except _Done as done:
        return done.code
    assert opts.response_topic is not None
    try:
        async with asyncio.timeout(opts.timeout or None):
            try:
                await client.subscribe(
                    opts.response_topic, opts.qos, properties=dict(opts.props("subscribe"))
                )
            except MQTTError as exc:
                if exc.packet != "SUBACK":
                    raise
                _err(opts, _reason_text(exc.reason_code))
                await client.disconnect()
                return 0
            props = dict(opts.props("publish"))
            props[Prop.RESPONSE_TOPIC] = opts.response_topic
            # One request, one response (mosquitto_rr takes neither -l nor -r).
            await client.publish(
                opts.topics[0],
                b"" if opts.pub_mode == "n" else opts.message,
                opts.qos,
                properties=dict(props),
            )
            message = await anext(aiter(client.messages()))
            _print(opts, message)
    except TimeoutError:
        await client.disconnect(Reason.DISCONNECT_WITH_WILL)
        _err(opts, "Timed out")
        return EXIT_TIMEOUT
    except MQTTError as exc:
        _err(opts, f"Error: {exc}")
        await client.disconnect()
        return 1
    await client.disconnect()
    return 0
