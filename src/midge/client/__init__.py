"""midge.client: an asyncio MQTT 3.1.1 / 5.0 client on midge's sans-IO codec.

::

    from midge.client import Client

    async with Client("localhost", 1883) as client:
        await client.subscribe("sensors/#", qos=1)
        await client.publish("sensors/t1", b"21.5", qos=1)
        async for message in client.messages():
            print(message.topic, message.payload)

docs/client.md is the guide; :class:`Client` the reference.
"""

from midge.client.client import Backoff, Client, ScramAuth, parse_server_reference
from midge.client.errors import ConnectionLost, MQTTError
from midge.client.message import ConnectResult, Message, PublishResult, SubscribeResult
from midge.client.store import (
    MemorySessionStore,
    Outgoing,
    SessionState,
    SessionStore,
    SqliteSessionStore,
)
from midge.codec.packets import Will
from midge.codec.properties import Prop
from midge.codec.reasons import Reason

__all__ = [
    "Backoff",
    "Client",
    "ConnectResult",
    "ConnectionLost",
    "MQTTError",
    "MemorySessionStore",
    "Message",
    "Outgoing",
    "Prop",
    "PublishResult",
    "Reason",
    "ScramAuth",
    "SessionState",
    "SessionStore",
    "SqliteSessionStore",
    "SubscribeResult",
    "Will",
    "parse_server_reference",
]
