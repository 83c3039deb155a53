"""Mosquitto-style bridges to other brokers (see docs/bridges.md)."""
