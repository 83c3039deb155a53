"""The admin API against its own OpenAPI document (``/api/openapi.json``), with schemathesis:
requests generated from the document (valid and invalid ones) to a real broker on a socket with
paho clients connected; no answer may be a 5xx or break the document (status codes, content
types, bodies). Bounded (a few examples per operation) to stay within seconds.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from paho.mqtt.enums import CallbackAPIVersion
from schemathesis.core.result import Ok

from midge.auth.passwd import hash_password
from midge.config import Config, ListenerConfig
from tests.conftest import RunningBroker

PASSWORD = "s3cret"
BASIC = "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()


@pytest.fixture(scope="module")
def api_broker() -> Iterator[tuple[RunningBroker, str]]:
    config = Config(
        listeners=[
            ListenerConfig(port=0, host="127.0.0.1"),
            ListenerConfig(port=0, protocol="http"),
        ],
        local_only=False,
        allow_anonymous=True,
        admin_user="admin",
        admin_password_hash=hash_password(PASSWORD.encode()).encode(),
    )
    broker = RunningBroker(config)
    host, port = broker.server.addresses[broker.server.protocols.index("http")][:2]
    # Something for the API to list: a connected client with a subscription, a retained message.
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="probe", protocol=paho.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.subscribe("s/#", qos=1)
    client.publish("s/kept", b"v", qos=1, retain=True).wait_for_publish(5)
    try:
        yield broker, f"http://{host}:{port}"
    finally:
        client.loop_stop()
        client.disconnect()
        broker.stop()


def test_the_api_keeps_its_openapi_contract(api_broker: tuple[RunningBroker, str]) -> None:
    """Every operation of the document, a few generated cases each (schemathesis's pytest
    plugin does not run under pytest 9.2 yet: its strategies are driven by hypothesis here)."""
    url = api_broker[1]
    schema = schemathesis.openapi.from_url(url + "/api/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()  # Err: a part of the document is invalid
        operations.append(result.ok())
    assert len(operations) == 16

    for operation in operations:
        strategy = operation.as_strategy()
        if operation.path == "/api/stream":
            # The dashboard's event stream lasts until its client goes: here it is asked to
            # end after a second (a generated number of seconds is kept when it is invalid).
            strategy = strategy.map(_short_stream)

        @given(case=strategy)
        @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            case.call_and_validate(base_url=url, headers={"Authorization": BASIC})

        check()


def _short_stream(case: Any) -> Any:
    seconds = (case.query or {}).get("seconds")
    if not isinstance(seconds, int) or seconds >= 1:
        case.query = {**(case.query or {}), "seconds": 1}
    return case
