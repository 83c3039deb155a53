"""``midge pub``, ``midge sub`` and ``midge rr``: mosquitto_pub, mosquitto_sub and mosquitto_rr
on :mod:`midge.client` (see docs/client.md, "Command-line tools")."""
