"""The v5 CONNACK byte for byte against Mosquitto 2.0.11 (issue 11), with no options and with
each option that changes it: Receive Maximum (max_inflight_messages: Mosquitto sends it unless
it is 0 or 65535, 20 by default), Server Keep Alive (max_keepalive), Maximum Packet Size, Maximum
QoS, Retain Available, Topic Alias Maximum (max_topic_alias, 10 by default), and the Assigned
Client Identifier (auto_id_prefix). Options are grouped so that few brokers start."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from midge.codec.encode import encode
from midge.codec.packets import Connack, Connect
from midge.codec.properties import Prop
from tests.differential.harness import needs_mosquitto
from tests.differential.test_wire import start_pair

pytestmark = needs_mosquitto

CONFIGS = {
    "defaults": [],
    "none-sent": ["max_inflight_messages 0", "max_topic_alias 0", "auto_id_prefix x-"],
    "every-limit": [
        "max_inflight_messages 65535",
        "max_topic_alias 65535",
        "max_keepalive 10",
        "max_packet_size 100",
        "max_qos 0",
        "retain_available false",
    ],
    "small": [
        "max_inflight_messages 1",
        "max_topic_alias 5",
        "max_qos 2",
        "max_keepalive 65535",
        "allow_zero_length_clientid false",
    ],
}
#: (client id, keep alive) of each CONNECT.
CONNECTS = [("c", 60), ("", 60), ("k", 0)]


UUID = "[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}"


def masked(data: bytes, ack: Connack, prefix: str) -> bytes:
    """The CONNACK's bytes, its Assigned Client Identifier (which must have Mosquitto's form: the
    prefix and an upper-case UUID) blanked out."""
    assigned = ack.properties.get(Prop.ASSIGNED_CLIENT_IDENTIFIER)
    if assigned is None:
        return data
    assert re.fullmatch(re.escape(prefix) + UUID, assigned), assigned
    return data.replace(assigned.encode(), b"?" * len(assigned))


@pytest.fixture(scope="module")
def answers() -> Iterator[dict[tuple[str, str, int], tuple[bytes, bytes]]]:
    """Every CONNECT against both brokers, one mosquitto per configuration."""
    results = {}
    for name, lines in CONFIGS.items():
        prefix = "x-" if "auto_id_prefix x-" in lines else "auto-"
        for pair in start_pair(lines):
            for client_id, keep_alive in CONNECTS:
                connect = Connect(protocol_level=5, client_id=client_id, keep_alive=keep_alive)
                (theirs, their_ack), (mine, my_ack) = pair.both(encode(connect, 5), 5)
                results[name, client_id, keep_alive] = (
                    masked(theirs, their_ack, prefix),
                    masked(mine, my_ack, prefix),
                )
    yield results


@pytest.mark.parametrize(("client_id", "keep_alive"), CONNECTS)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_connack_as_mosquittos(
    answers: dict[tuple[str, str, int], tuple[bytes, bytes]],
    config: str,
    client_id: str,
    keep_alive: int,
) -> None:
    theirs, mine = answers[config, client_id, keep_alive]
    # allow_zero_length_clientid false included: both answer 0x80 (Unspecified error); the
    # specification lets the server choose (MQTT-3.1.3-8 v5: it MAY send 0x85).
    assert mine.hex() == theirs.hex()
