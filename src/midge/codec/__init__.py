"""The sans-IO MQTT codec: bytes in, typed packets out, and back. No asyncio in here."""

from midge.codec.decode import Decoder
from midge.codec.encode import encode

__all__ = ["Decoder", "encode"]
