"""Scenarios for each chapter of the specification, each protocol version and each directive,
run against the real Mosquitto 2.0.11 and midge (in memory) and compared byte for byte per
client (see tests/differential/scenario.py for the format).

A scenario that differs on purpose names its entry of
:data:`tests.differential.differences.DELIBERATE` (listed in docs/mosquitto.md); one whose
difference another branch fixes is ``xfail(strict=True)`` with that branch's name.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from midge.codec.encode import encode
from midge.codec.packets import Connect, Disconnect, Pingreq, Pubrel, Subscription, Will
from midge.codec.properties import Prop
from midge.config import parse_mosquitto_conf
from tests.differential.conftest import Pool
from tests.differential.differences import DELIBERATE
from tests.differential.harness import needs_mosquitto
from tests.differential.scenario import (
    Ack,
    C,
    Close,
    Disc,
    Memory,
    Pub,
    Quiet,
    Real,
    Scenario,
    Send,
    Sleep,
    Sub,
    Unsub,
    Wait,
    compare,
)
from tests.memory import MemoryBroker
from tests.rawclient import raw_connect, raw_publish, raw_subscribe, raw_unsubscribe

ANON = ("allow_anonymous true",)
V = (3, 4, 5)
NAME = {3: "MQIsdp", 4: "MQTT", 5: "MQTT"}
SE: dict[int, Any] = {Prop.SESSION_EXPIRY_INTERVAL: 300}


def persistent(version: int) -> dict[str, Any]:
    """The CONNECT fields of a session that outlives its connection."""
    return {"clean": False, "properties": SE if version == 5 else {}}


SCENARIOS: list[Scenario] = []


def add(name: str, *steps: Any, **fields: Any) -> None:
    SCENARIOS.append(Scenario(name, list(steps), **fields))


# -- 3.1 CONNECT / 3.2 CONNACK ---------------------------------------------------------------------

for v in V:
    add(f"connect-v{v}", C("a", v))
    add(f"connect-keep-alive-0-v{v}", C("a", v, keep_alive=0))
    add(
        f"session-present-v{v}",
        C("a", v, **persistent(v)),
        Sub("a", "~/t", qos=1),
        Close("a"),
        Quiet(),
        C("a", v, **persistent(v)),
        Disc("a"),
        C("a", v),
    )
    for qos in (0, 1, 2):
        for retain in (False, True):
            add(
                f"will-qos{qos}-retain{int(retain)}-v{v}",
                C("s", v),
                Sub("s", "~/will", qos=2),
                C("w", v, will=Will("~/will", b"gone", qos, retain)),
                Close("w"),
                Wait("s"),
                C("late", v),
                Sub("late", "~/will", qos=2),
            )
    add(
        f"no-will-on-disconnect-v{v}",
        C("s", v),
        Sub("s", "~/will"),
        C("w", v, will=Will("~/will", b"gone")),
        Disc("w"),
        Quiet(),
    )
    if v != 3:  # 5 s of real time: at v3.1.1 and v5
        add(
            f"keep-alive-expires-will-v{v}",
            C("s", v),
            Sub("s", "~/will"),
            C("w", v, keep_alive=1, will=Will("~/will", b"timed out")),
            Sleep(2.6),
            # Mosquitto checks keep alive in whole seconds: 2 to 3 s, and its loop's wake-up
            # (later on a loaded machine; waiting ends as soon as the Will comes).
            Wait("s", timeout=8.0),
            Wait("w"),
            deliberate="reason-before-close" if v == 5 else None,
            differ=("w",),
        )
    add(f"empty-client-id-v{v}", C("a", v, client_id=""))
    add(f"empty-client-id-persistent-v{v}", C("a", v, client_id="", clean=False))
    add(f"long-client-id-v{v}", C("a", v, client_id="~" + "x" * 30))
    add(
        f"username-without-password-v{v}",
        C("a", v, username="someone"),
    )
    add(
        f"takeover-v{v}",
        C("old", v, client_id="~same"),
        Sub("old", "~/t"),
        C("new", v, client_id="~same", clean=False),
        Wait("old"),
        Pub("new", "~/t"),
        deliberate="takeover-disconnect" if v == 5 else None,
        differ=("old",) if v == 5 else (),
    )
    add(
        f"second-connect-v{v}",
        C("a", v),
        Send("a", encode(Connect("~a", protocol_level=v, protocol_name=NAME[v]), v)),
        Wait("a"),
        deliberate="reason-before-close" if v == 5 else None,
    )
    add(f"pingreq-v{v}", C("a", v), Send("a", Pingreq()), Send("a", Pingreq(), Pingreq()))

for v in (4, 5):
    add(
        f"password-without-username-v{v}",
        C("a", v, raw=raw_connect(f"pwnouser{v}", version=v, password=b"x")),
    )
    add(
        f"will-qos-3-v{v}",
        C("a", v, raw=raw_connect(f"willqos3{v}", version=v, will_topic="w", will_qos=3)),
        deliberate="reason-before-close" if v == 5 else None,
    )
    add(
        f"will-retain-unavailable-v{v}",
        C("a", v, will=Will("~/w", b"x", 0, True)),
        conf=("allow_anonymous true", "retain_available false"),
    )
    add(
        f"will-qos-above-max-qos-v{v}",
        C("a", v, will=Will("~/w", b"x", 2)),
        conf=("allow_anonymous true", "max_qos 1"),
    )
add(
    "will-delay-v5",
    C("s", 5),
    Sub("s", "~/will"),
    C(
        "w",
        5,
        properties={Prop.SESSION_EXPIRY_INTERVAL: 10},
        will=Will("~/will", b"late", 0, False, {Prop.WILL_DELAY_INTERVAL: 1}),
    ),
    Close("w"),
    Quiet(),
    Sleep(2.2),
    Wait("s"),
)
add(
    "connect-v5-properties",
    C(
        "a",
        5,
        properties={
            Prop.SESSION_EXPIRY_INTERVAL: 30,
            Prop.RECEIVE_MAXIMUM: 10,
            Prop.MAXIMUM_PACKET_SIZE: 5000,
            Prop.TOPIC_ALIAS_MAXIMUM: 4,
            Prop.REQUEST_RESPONSE_INFORMATION: 1,
            Prop.REQUEST_PROBLEM_INFORMATION: 0,
            Prop.USER_PROPERTY: [("k", "v")],
        },
    ),
)
add(
    "connect-v5-unknown-auth-method",
    C("a", 5, properties={Prop.AUTHENTICATION_METHOD: "SCRAM-SHA-1"}),
)
add(
    "disconnect-with-will-v5",
    C("s", 5),
    Sub("s", "~/will"),
    C("w", 5, will=Will("~/will", b"gone", 1, False, {Prop.CONTENT_TYPE: "text/plain"})),
    Disc("w", 0x04),
    Wait("s"),
)
add(
    "session-expiry-v5",
    C("a", 5, clean=False, properties={Prop.SESSION_EXPIRY_INTERVAL: 1}),
    Sub("a", "~/t", qos=1),
    Close("a"),
    Sleep(2.5),
    C("a", 5, clean=False, properties={Prop.SESSION_EXPIRY_INTERVAL: 1}),
)
add(
    "session-expiry-set-at-disconnect-v5",
    C("a", 5, clean=False, properties={Prop.SESSION_EXPIRY_INTERVAL: 300}),
    Sub("a", "~/t", qos=1),
    Disc("a", 0, {Prop.SESSION_EXPIRY_INTERVAL: 0}),
    C("a", 5, clean=False),
)
add(
    "session-expiry-raised-at-disconnect-v5",
    C("a", 5),
    Disc("a", 0, {Prop.SESSION_EXPIRY_INTERVAL: 30}),
)

# -- 3.3 PUBLISH and its acknowledgements --------------------------------------------------------

for v in V:
    for pub_qos in (0, 1, 2):
        for sub_qos in (0, 1, 2):
            add(
                f"publish-qos{pub_qos}-to-sub-qos{sub_qos}-v{v}",
                C("s", v),
                Sub("s", "~/t", qos=sub_qos),
                C("p", v),
                Pub("p", "~/t", b"hello", qos=pub_qos),
                Pub("p", "~/t", b"again", qos=pub_qos),
            )
    add(
        f"publish-qos1-duplicate-v{v}",
        C("s", v),
        Sub("s", "~/t", qos=2),
        C("p", v),
        Pub("p", "~/t", b"one", qos=1, packet_id=7),
        Pub("p", "~/t", b"one", qos=1, packet_id=7, dup=True),
    )
    add(
        f"publish-qos2-duplicate-before-pubrel-v{v}",
        C("s", v),
        Sub("s", "~/t", qos=2),
        C("p", v, auto_ack=False),
        Pub("p", "~/t", b"once", qos=2, packet_id=9),
        Pub("p", "~/t", b"once", qos=2, packet_id=9, dup=True),
        Send("p", Pubrel(9)),
        Send("p", Pubrel(9)),
    )
    add(
        f"subscriber-holds-qos2-v{v}",
        C("s", v, auto_ack=False),
        Sub("s", "~/t", qos=2),
        C("p", v),
        Pub("p", "~/t", b"x", qos=2),
        Ack("s"),
        Send("s", Disconnect()),
    )
    add(
        f"retained-v{v}",
        C("p", v),
        Pub("p", "~/r", b"kept", qos=1, retain=True),
        Pub("p", "~/r/2", b"kept too", qos=0, retain=True),
        C("s", v),
        Sub("s", "~/r/#", qos=2),
        Pub("p", "~/r", b"live", retain=True),
        Pub("p", "~/r", b"", retain=True),
        C("t", v),
        Sub("t", "~/r/#", qos=1),
        Sub("t", "~/r/#", qos=1),
    )
    add(
        f"publish-no-subscribers-qos1-v{v}",
        C("p", v),
        Pub("p", "~/nobody", qos=1),
    )
    add(
        f"publish-no-subscribers-qos2-v{v}",
        C("p", v),
        Pub("p", "~/nobody", qos=2),
    )
    add(
        f"queued-while-offline-v{v}",
        C("s", v, **persistent(v)),
        Sub("s", "~/t", qos=2),
        Sub("s", "~/t0", qos=0),
        Close("s"),
        Quiet(),
        C("p", v),
        Pub("p", "~/t", b"1", qos=1),
        Pub("p", "~/t", b"2", qos=2),
        Pub("p", "~/t0", b"3", qos=0),
        Pub("p", "~/t", b"4", qos=0),
        C("s", v, **persistent(v)),
    )
    add(
        f"overlapping-subscriptions-v{v}",
        C("s", v),
        Sub("s", "~/a/#", qos=1),
        Sub("s", "~/a/+", qos=2),
        Sub("s", "~/+/b", qos=0),
        C("p", v),
        Pub("p", "~/a/b", b"x", qos=2),
    )
    add(
        f"overlapping-lower-qos-first-v{v}",
        C("s", v),
        Sub("s", "~/a/#", qos=2),
        Sub("s", "~/a/b", qos=0),
        Sub("s", "~/+/b", qos=1),
        C("p", v),
        Pub("p", "~/a/b", b"x", qos=2),
        deliberate="overlapping-max-qos" if v != 5 else None,
        differ=("s",),
    )
    add(
        f"subscribe-several-v{v}",
        C("s", v),
        Sub("s", "~/a", "~/b/+", "~/c/#", qos=1),
        Sub("s", "~/a", qos=2),
        Unsub("s", "~/a", "~/nothing"),
        C("p", v),
        Pub("p", "~/a", qos=1),
        Pub("p", "~/b/x", qos=2),
    )
    add(
        f"shared-subscription-v{v}",
        C("s1", v),
        Sub("s1", "$share/g/~/s", qos=1),
        C("s2", v),
        Sub("s2", "$share/g/~/s", qos=1),
        C("p", v),
        Pub("p", "~/s", b"1", qos=1),
        Pub("p", "~/s", b"2", qos=1),
        Pub("p", "~/s", b"3", qos=1),
        Unsub("s1", "$share/g/~/s"),
        Pub("p", "~/s", b"4", qos=1),
    )

add(
    "retain-handling-v5",
    C("p", 5),
    Pub("p", "~/r", b"kept", retain=True),
    C("s", 5),
    Sub("s", Subscription("~/r", 1, retain_handling=0)),
    Sub("s", Subscription("~/r", 1, retain_handling=0)),
    Sub("s", Subscription("~/r", 1, retain_handling=1)),
    Sub("s", Subscription("~/#", 1, retain_handling=1)),
    Sub("s", Subscription("~/+", 1, retain_handling=2)),
)
add(
    "retain-as-published-v5",
    C("s", 5),
    Sub("s", Subscription("~/rap", 1, retain_as_published=True)),
    Sub("s", Subscription("~/+", 0, retain_as_published=False)),
    C("p", 5),
    Pub("p", "~/rap", b"r", retain=True),
    Pub("p", "~/rap", b"n", retain=False),
)
add(
    "subscription-identifiers-v5",
    C("s", 5),
    Sub("s", "~/a/#", qos=1, properties={Prop.SUBSCRIPTION_IDENTIFIER: [5]}),
    Sub("s", "~/a/+", qos=2, properties={Prop.SUBSCRIPTION_IDENTIFIER: [300]}),
    Sub("s", "~/a/b", qos=0),
    C("p", 5),
    Pub("p", "~/a/b", b"x", qos=1),
    Pub("p", "~/a/c", b"y", qos=2),
)
add(
    "no-local-v5",
    C("s", 5),
    Sub("s", Subscription("~/nl", 1, no_local=True)),
    Sub("s", Subscription("~/+", 0)),
    Pub("s", "~/nl", b"mine", qos=1),
)
add(
    "no-local-shared-v5",
    C("s", 5),
    Sub("s", Subscription("$share/g/~/nl", 1, no_local=True)),
    deliberate="no-local-on-shared",
)
add(
    "properties-passthrough-v5",
    C("s", 5),
    Sub("s", "~/p", qos=1, properties={Prop.SUBSCRIPTION_IDENTIFIER: [7]}),
    C("p", 5),
    Pub(
        "p",
        "~/p",
        b"{}",
        qos=1,
        properties={
            Prop.USER_PROPERTY: [("z", "1"), ("a", "2"), ("z", "3")],
            Prop.CORRELATION_DATA: b"\x01\x02",
            Prop.RESPONSE_TOPIC: "~/reply",
            Prop.CONTENT_TYPE: "application/json",
            Prop.MESSAGE_EXPIRY_INTERVAL: 100,
            Prop.PAYLOAD_FORMAT_INDICATOR: 1,
        },
    ),
)
add(
    "properties-to-v4-subscriber",
    C("s", 4),
    Sub("s", "~/p", qos=1),
    C("p", 5),
    Pub("p", "~/p", b"x", qos=1, properties={Prop.USER_PROPERTY: [("k", "v")]}),
)
add(
    "topic-alias-from-client-v5",
    C("s", 5),
    Sub("s", "~/long/topic/name", qos=1),
    C("p", 5),
    Pub("p", "~/long/topic/name", b"1", qos=1, properties={Prop.TOPIC_ALIAS: 1}),
    Pub("p", "", b"2", qos=1, properties={Prop.TOPIC_ALIAS: 1}),
    Pub("p", "~/long/topic/other", b"3", properties={Prop.TOPIC_ALIAS: 1}),
    Pub("p", "", b"4", properties={Prop.TOPIC_ALIAS: 1}),
)
add(
    "resume-with-smaller-receive-maximum-v5",
    C("s", 5, auto_ack=False, clean=False, properties=SE),
    Sub("s", "~/t", qos=1),
    C("p", 5),
    *(Pub("p", "~/t", b"%d" % i, qos=1) for i in range(4)),
    Close("s"),
    Quiet(),
    C("s", 5, auto_ack=False, clean=False, properties={**SE, Prop.RECEIVE_MAXIMUM: 2}),
    Ack("s", 1),
    Ack("s"),
    deliberate="resend-within-receive-maximum",
    differ=("s",),
)
add(
    "receive-maximum-v5",
    C("s", 5, auto_ack=False, properties={Prop.RECEIVE_MAXIMUM: 2}),
    Sub("s", "~/t", qos=2),
    C("p", 5),
    *(Pub("p", "~/t", b"%d" % i, qos=1) for i in range(4)),
    Ack("s", 1),
    Ack("s"),
    Ack("s"),
    deliberate="inflight-window",
    differ=("s",),
)
add(
    "topic-alias-to-client-v5",
    C("s", 5, properties={Prop.TOPIC_ALIAS_MAXIMUM: 5}),
    Sub("s", "~/alias", qos=1),
    C("p", 5),
    Pub("p", "~/alias", b"1", qos=1),
    Pub("p", "~/alias", b"2", qos=1),
    deliberate="server-topic-aliases",
    differ=("s",),
)
add(
    "retained-order",
    C("p", 4),
    *(
        Pub("p", topic, topic.encode(), retain=True)
        for topic in ("~/o/b", "~/o", "~/o/a/x", "~/o/a", "~/o/c/x/y", "~/o/a/y", "~/p/a")
    ),
    C("s", 5),
    Sub("s", "~/o/#"),
    Sub("s", "~/+/a"),
    Sub("s", "~/o/+"),
    Sub("s", "~/+/+/x"),
    Sub("s", "~/#"),
)
add(
    "topic-alias-above-maximum-v5",
    C("p", 5),
    Pub("p", "~/t", b"1", properties={Prop.TOPIC_ALIAS: 11}),
)
add(
    "topic-alias-unknown-v5",
    C("p", 5),
    Pub("p", "", b"1", properties={Prop.TOPIC_ALIAS: 3}),
)
add(
    "message-expiry-v5",
    C("s", 5, clean=False, properties=SE),
    Sub("s", "~/e", qos=1),
    Close("s"),
    Quiet(),
    C("p", 5),
    Pub("p", "~/e", b"short", qos=1, properties={Prop.MESSAGE_EXPIRY_INTERVAL: 1}),
    Pub("p", "~/e", b"long", qos=1, properties={Prop.MESSAGE_EXPIRY_INTERVAL: 1000}),
    Sleep(2.2),
    C("s", 5, clean=False, properties=SE),
    deliberate="unsent-takes-no-packet-id",  # Mosquitto's expired message used one
    differ=("s",),
)
add(
    "retained-message-expiry-v5",
    C("p", 5),
    Pub("p", "~/re", b"short", retain=True, properties={Prop.MESSAGE_EXPIRY_INTERVAL: 1}),
    Sleep(2.2),
    C("s", 5),
    Sub("s", "~/re"),
)
add(
    "v31-and-v5-subscribers",
    C("a", 3),
    Sub("a", "~/m", qos=2),
    C("b", 5),
    Sub("b", "~/m", qos=1),
    C("c", 4),
    Pub("c", "~/m", b"all", qos=2, retain=True),
)

# -- 3.14 DISCONNECT -----------------------------------------------------------------------------

for v in (4, 5):
    add(
        f"disconnect-then-send-v{v}",
        C("a", v),
        Send("a", Disconnect(), Pingreq()),
        Wait("a"),
    )

# -- directives ----------------------------------------------------------------------------------

NOANON = ("allow_anonymous false",)
PASSWD = ("allow_anonymous false", "password_file {files}/passwd")
ACL = ("allow_anonymous true", "password_file {files}/passwd", "acl_file {files}/acl")

for v in V:
    add(f"anonymous-refused-v{v}", C("a", v), conf=NOANON)
    add(
        f"refused-with-max-qos-v{v}",
        C("a", v),
        conf=("allow_anonymous false", "max_qos 1"),
    )
    add(f"password-good-v{v}", C("a", v, username="alice", password=b"secret"), conf=PASSWD)
    add(f"password-bad-v{v}", C("a", v, username="alice", password=b"wrong"), conf=PASSWD)
    add(f"password-unknown-user-v{v}", C("a", v, username="eve", password=b"x"), conf=PASSWD)
    add(f"password-missing-v{v}", C("a", v, username="bob"), conf=PASSWD)
    add(f"password-empty-v{v}", C("a", v, username="bob", password=b""), conf=PASSWD)
    add(
        f"acl-publish-v{v}",
        C("s", v, username="alice", password=b"secret"),
        Sub("s", "~/#", qos=1),
        C("p", v),
        Pub("p", "~/open/x", b"1", qos=1),
        Pub("p", "~/ro/x", b"2", qos=1),
        Pub("p", "~/wo/x", b"3", qos=1),
        Pub("p", "~/alice/x", b"4", qos=2),
        Pub("p", "~/other", b"5", qos=0),
        conf=ACL,
    )
    add(
        f"acl-subscribe-v{v}",
        C("s", v),
        Sub("s", "~/open/#", "~/ro/#", "~/wo/#", "~/alice/#", "~/#", qos=1),
        conf=ACL,
    )
    add(
        f"max-inflight-v{v}",
        C("s", v, auto_ack=False),
        Sub("s", "~/t", qos=1),
        C("p", v),
        *(Pub("p", "~/t", b"%d" % i, qos=1) for i in range(4)),
        Ack("s", 1),
        Ack("s"),
        Ack("s"),
        conf=("allow_anonymous true", "max_inflight_messages 2"),
        deliberate="inflight-window",
        differ=("s",),
    )
    add(
        f"max-queued-v{v}",
        C("s", v, **persistent(v)),
        Sub("s", "~/t", qos=1),
        Close("s"),
        Quiet(),
        C("p", v),
        *(Pub("p", "~/t", b"%d" % i, qos=1) for i in range(5)),
        C("s", v, **persistent(v)),
        conf=("allow_anonymous true", "max_queued_messages 2"),
    )
    add(
        f"max-packet-size-v{v}",
        C("s", v),
        Sub("s", "~/t"),
        C("p", v),
        Pub("p", "~/t", b"x" * 10),
        Pub("p", "~/t", b"x" * 200),
        conf=("allow_anonymous true", "max_packet_size 100"),
    )
    add(
        f"message-size-limit-v{v}",
        C("s", v),
        Sub("s", "~/t", qos=1),
        C("p", v),
        Pub("p", "~/t", b"x" * 10, qos=1),
        Pub("p", "~/t", b"x" * 11, qos=1),
        Pub("p", "~/t", b"x" * 11, qos=2),
        Pub("p", "~/t", b"x" * 11),
        conf=("allow_anonymous true", "message_size_limit 10"),
        deliberate="reason-code-not-allowed" if v == 5 else None,
        differ=("p",),
    )
    add(
        f"max-qos-v{v}",
        C("s", v),
        Sub("s", "~/t", qos=2),
        C("p", v),
        Pub("p", "~/t", b"1", qos=1),
        Pub("p", "~/t", b"2", qos=2),
        conf=("allow_anonymous true", "max_qos 1"),
    )
    add(
        f"retain-unavailable-v{v}",
        C("s", v),
        Sub("s", "~/t"),
        C("p", v),
        Pub("p", "~/t", b"1", retain=True),
        conf=("allow_anonymous true", "retain_available false"),
    )
    add(
        f"persistent-client-expiration-v{v}",
        C("s", v, **persistent(v)),
        Sub("s", "~/t", qos=1),
        Close("s"),
        Quiet(),
        C("s", v, **persistent(v)),
        conf=("allow_anonymous true", "persistent_client_expiration 1h"),
    )
    add(
        f"upgrade-outgoing-qos-v{v}",
        C("s", v),
        Sub("s", "~/t", qos=2),
        Sub("s", "~/u", qos=1),
        C("p", v),
        Pub("p", "~/t", b"0"),
        Pub("p", "~/u", b"0"),
        Pub("p", "~/t", b"1", qos=1),
        conf=("allow_anonymous true", "upgrade_outgoing_qos true"),
    )
    add(
        f"zero-length-clientid-refused-v{v}",
        C("a", v, client_id=""),
        conf=("allow_anonymous true", "allow_zero_length_clientid false"),
    )
    add(
        f"auto-id-prefix-v{v}",
        C("a", v, client_id=""),
        conf=("allow_anonymous true", "auto_id_prefix pre-"),
    )
    add(
        f"max-keepalive-v{v}",
        C("a", v, keep_alive=60),
        C("b", v, keep_alive=5),
        C("c", v, keep_alive=0),
        conf=("allow_anonymous true", "max_keepalive 10"),
        deliberate="max-keepalive-v3" if v != 5 else None,
    )
    add(
        f"tcp-nodelay-v{v}",
        C("s", v),
        Sub("s", "~/t", qos=1),
        Pub("s", "~/t", b"x", qos=1),
        conf=("allow_anonymous true", "set_tcp_nodelay true"),
    )
    add(
        f"per-listener-settings-v{v}",
        C("s", v),
        Sub("s", "~/t", qos=1),
        Pub("s", "~/t", b"x", qos=1),
        C("u", v, username="alice", password=b"secret"),
        conf=(
            "per_listener_settings true",
            "allow_anonymous true",
            "password_file {files}/passwd",
        ),
    )

    add(
        f"acl-retained-v{v}",
        C("p", v, username="alice", password=b"secret"),
        *(Pub("p", f"~/{area}/r", area.encode(), retain=True) for area in ("open", "alice", "wo")),
        C("s", v),
        Sub("s", "~/#", qos=1),
        conf=ACL,
    )
    add(
        f"queue-qos0-v{v}",
        C("s", v, **persistent(v)),
        Sub("s", "~/t", qos=1),
        Close("s"),
        Quiet(),
        C("p", v),
        Pub("p", "~/t", b"0"),
        Pub("p", "~/t", b"1", qos=1),
        C("s", v, **persistent(v)),
        conf=("allow_anonymous true", "queue_qos0_messages true"),
    )
    add(
        f"max-queued-bytes-v{v}",
        C("s", v, **persistent(v)),
        Sub("s", "~/t", qos=1),
        Close("s"),
        Quiet(),
        C("p", v),
        *(Pub("p", "~/t", b"x" * 40, qos=1) for _ in range(4)),
        C("s", v, **persistent(v)),
        conf=("allow_anonymous true", "max_queued_bytes 100"),
    )
    add(
        f"max-inflight-bytes-v{v}",
        C("s", v, auto_ack=False),
        Sub("s", "~/t", qos=1),
        C("p", v),
        *(Pub("p", "~/t", b"x" * 40, qos=1) for _ in range(4)),
        Ack("s", 1),
        Ack("s"),
        Ack("s"),
        conf=("allow_anonymous true", "max_inflight_bytes 100"),
    )
    add(
        f"unsubscribe-then-publish-v{v}",
        C("s", v),
        Sub("s", "~/a", "~/b", qos=1),
        Unsub("s", "~/a"),
        Unsub("s", "~/a"),
        C("p", v),
        Pub("p", "~/a", qos=1),
        Pub("p", "~/b", qos=1),
    )

# -- malformed and forbidden packets below v5 (v5: test_malformed.py) ----------------------------

MALFORMED: dict[str, Callable[[int], bytes]] = {
    "publish-packet-id-0": lambda v: raw_publish("a", b"x", 1, packet_id=0, version=v),
    "publish-qos-3": lambda v: raw_publish("a", b"x", 3, packet_id=1, version=v),
    "publish-wildcard-topic": lambda v: raw_publish("a/+", b"x", version=v),
    "publish-empty-topic": lambda v: raw_publish("", b"x", version=v),
    "subscribe-qos-3": lambda v: raw_subscribe(1, ("a", 3), version=v),
    "subscribe-no-filter": lambda v: raw_subscribe(1, version=v),
    "subscribe-bad-filter": lambda v: raw_subscribe(1, ("a/#/b", 0), version=v),
    "subscribe-reserved-flags": lambda v: raw_subscribe(1, ("a", 0), first_byte=0x80, version=v),
    "unsubscribe-no-filter": lambda v: raw_unsubscribe(1, version=v),
    "unsubscribe-bad-filter": lambda v: raw_unsubscribe(1, "a/#/b", version=v),
}
#: What Mosquitto accepts from an MQTT 3.1 client only.
LENIENT_31 = {"subscribe-no-filter", "subscribe-reserved-flags", "unsubscribe-no-filter"}
for v in (3, 4):
    for name, build in MALFORMED.items():
        add(
            f"malformed-{name}-v{v}",
            C("a", v),
            Send("a", build(v)),
            Wait("a"),
            deliberate="strict-31-framing" if v == 3 and name in LENIENT_31 else None,
        )

# -- $ topics (a broker of their own: "#" would see every other scenario) -----------------------

ALONE = ("allow_anonymous true", "# alone: a mosquitto process for these scenarios only")
for v in V:
    add(
        f"dollar-topics-v{v}",
        C("s", v),
        Sub("s", "#", "+/x", "$foo/#", qos=1),
        C("p", v),
        Pub("p", "$foo/x", b"1", qos=1),
        Pub("p", "a/x", b"2", qos=1),
        Pub("p", "$SYS/x", b"3", qos=1),
        Unsub("s", "#", "+/x", "$foo/#"),
        conf=ALONE,
    )

#: A property list holding one User Property k=v, encoded.
USER_PROPERTY_K_V = b"\x07\x26\x00\x01k\x00\x01v"

# -- more of MQTT 5 ------------------------------------------------------------------------------

add(
    "subscription-identifier-0-v5",
    C("s", 5),
    Sub("s", "~/t", properties={Prop.SUBSCRIPTION_IDENTIFIER: [0]}),
    Wait("s"),
)
add(
    "publish-subscription-identifier-0-v5",
    C("p", 5),
    Send("p", raw_publish("t", b"x", version=5, properties=b"\x02\x0b\x00")),
    Wait("p"),
    deliberate="spec-musts",  # MQTT-3.3.4-6: Mosquitto ignores it
)
add(
    "subscribe-two-subscription-identifiers-v5",
    C("s", 5),
    Send("s", raw_subscribe(1, ("t", 0), version=5, properties=b"\x04\x0b\x01\x0b\x02")),
    Wait("s"),
    deliberate="reason-before-close",
)
add(
    "response-topic-wildcard-v5",
    C("p", 5),
    Pub("p", "~/t", qos=1, properties={Prop.RESPONSE_TOPIC: "~/+"}),
    Wait("p"),
)
add(
    "payload-format-invalid-utf8-v5",
    C("s", 5),
    Sub("s", "~/t"),
    C("p", 5),
    Pub("p", "~/t", b"\xff\xfe", qos=1, properties={Prop.PAYLOAD_FORMAT_INDICATOR: 1}),
)
add(
    "client-disconnect-reasons-v5",
    C("s", 5),
    Sub("s", "~/will"),
    C("a", 5, will=Will("~/will", b"a")),
    Disc("a", 0x80, {Prop.REASON_STRING: "bye"}),
    Wait("s"),
    C("b", 5, will=Will("~/will", b"b")),
    Disc("b", 0x00, {Prop.USER_PROPERTY: [("k", "v")]}),
    Quiet(),
    deliberate="will-after-error-disconnect",
    differ=("s",),
)
add(
    "auth-without-method-v5",
    C("a", 5),
    Send("a", bytes([0xF0, 0])),
    Wait("a"),
    deliberate="reason-before-close",
)
add(
    "unsubscribe-user-properties-v5",
    C("s", 5),
    Sub("s", "~/t", properties={Prop.USER_PROPERTY: [("a", "b")]}),
    Send("s", raw_unsubscribe(9, "~/t", version=5, properties=USER_PROPERTY_K_V)),
)
add(
    "request-problem-information-0-v5",
    C("a", 5, properties={Prop.REQUEST_PROBLEM_INFORMATION: 0}),
    Pub("a", "~/t", qos=1, properties={Prop.TOPIC_ALIAS: 100}),
    Wait("a"),
)
add(
    "server-keep-alive-v5",
    C("a", 5, keep_alive=0),
    C("b", 5, keep_alive=3600),
    conf=("allow_anonymous true", "max_keepalive 120"),
)
add(
    "maximum-packet-size-from-client-v5",
    C("s", 5, properties={Prop.MAXIMUM_PACKET_SIZE: 30}),
    Sub("s", "~/t", qos=1),
    C("p", 5),
    Pub("p", "~/t", b"small", qos=1),
    Pub("p", "~/t", b"x" * 40, qos=1),
    Pub("p", "~/t", b"again", qos=1),
    deliberate="unsent-takes-no-packet-id",  # Mosquitto's dropped PUBLISH used one
    differ=("s",),
)

# -- order on one connection, long topics ---------------------------------------------------------

for v in V:
    for qos in (1, 2):
        add(
            f"echo-order-qos{qos}-v{v}",
            C("a", v),
            Sub("a", "~/echo", qos=2),
            Pub("a", "~/echo", b"me", qos=qos),
        )
    add(
        f"long-topic-v{v}",
        C("s", v),
        Sub("s", "~/#"),
        C("p", v),
        Pub("p", "~/" + "x" * 60000, b"long", qos=1),
        Pub("p", "~/" + "/".join(["l"] * 300), b"deep", qos=1),
        deliberate="deep-topics",  # Mosquitto closes above 200 levels
    )


def _params() -> list[Any]:
    names = [s.name for s in SCENARIOS]
    assert len(names) == len(set(names)), "scenario names are unique"
    out = []
    for scenario in SCENARIOS:
        marks = []
        if scenario.xfail:
            marks.append(pytest.mark.xfail(strict=True, reason=scenario.xfail))
        out.append(pytest.param(scenario, id=scenario.name, marks=marks))
    return out


@needs_mosquitto
@pytest.mark.parametrize("scenario", _params())
def test_scenario(mosquitto_pool: Pool, scenario: Scenario) -> None:
    port = mosquitto_pool.port(scenario.conf or ANON)
    theirs = scenario.run(Real(port))
    config = parse_mosquitto_conf(mosquitto_pool.text(scenario.conf or ANON, port))
    ours = scenario.run(Memory(MemoryBroker(config)))
    report = compare(scenario, theirs, ours)
    if scenario.deliberate is None:
        if report:
            pytest.fail("midge differs from Mosquitto 2.0.11:\n" + "\n\n".join(report))
        return
    differing = {line.split(" ", 2)[1] for line in report}
    allowed = set(scenario.differ) or set(theirs)
    assert differing, f"no longer differs: remove {scenario.deliberate!r} from the scenario"
    assert differing <= allowed, "\n\n".join(report)


def test_deliberate_differences_are_documented() -> None:
    """Every deliberate difference a scenario declares is listed in docs/mosquitto.md."""
    page = (Path(__file__).parents[2] / "docs" / "mosquitto.md").read_text()
    for key, phrase in DELIBERATE.items():
        assert phrase in page, f"{key}: docs/mosquitto.md does not list {phrase!r}"
    for scenario in SCENARIOS:
        assert scenario.deliberate is None or scenario.deliberate in DELIBERATE, scenario.name
