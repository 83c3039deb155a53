"""The deliberate differences from Mosquitto 2.0.11 that differential scenarios declare.

Each key is what a :class:`tests.differential.scenario.Scenario` names in ``deliberate``; each
value is the phrase docs/mosquitto.md lists it under (test_registry checks it is there), so a
reader of a failing scenario finds the reason, and a reader of the page finds the scenario.
"""

from __future__ import annotations

DELIBERATE: dict[str, str] = {
    "resend-within-receive-maximum": (
        "A resumed session re-sends within the client's Receive Maximum"
    ),
    "no-local-on-shared": "No Local on a Shared Subscription is refused",
    "takeover-disconnect": "DISCONNECT 0x8E on take-over",
    "inflight-window": "The in-flight window holds after an acknowledgement",
    "strict-31-framing": "MQTT 3.1 clients get the 3.1.1 framing rules",
    "spec-musts": "The specification's other MUSTs",
    "will-after-error-disconnect": "A DISCONNECT with an error reason publishes the Will",
    "reason-before-close": "A v5 client hears why it is closed",
    "reason-code-not-allowed": "No 0x95 in a PUBACK or PUBREC",
    "overlapping-max-qos": "Overlapping subscriptions of a v3.1/3.1.1 client get the highest QoS",
    "server-topic-aliases": "midge sends Topic Aliases to clients that accept them",
    "unsent-takes-no-packet-id": "A PUBLISH too large for the client takes no packet identifier",
    "max-keepalive-v3": "`max_keepalive` applies to v3.1/3.1.1 clients",
    "deep-topics": "Topics deeper than 200 levels are accepted",
}
