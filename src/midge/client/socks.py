"""Connecting through a SOCKS5 proxy (RFC 1928), with no authentication or a user name and
password (RFC 1929): :class:`midge.client.Client`'s ``proxy="socks5h://[USER[:PASSWORD]@]HOST
[:PORT]"``, mosquitto's ``--proxy``. The host name of the broker is resolved by the proxy
("socks5h"), as libmosquitto does it; TLS, if any, runs inside the tunnel.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from midge.client.errors import ConnectionLost


class ProxyError(ConnectionLost):
    """The SOCKS5 proxy refused: ``authentication`` tells a refused user name and password
    (or no acceptable method) from a refused connection to the broker."""

    def __init__(self, message: str, authentication: bool = False) -> None:
        super().__init__(message)
        self.authentication = authentication


#: RFC 1928 6: the REP field's meanings.
_REPLIES = {
    1: "general SOCKS server failure",
    2: "connection not allowed by ruleset",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}


@dataclass(frozen=True, slots=True)
class Socks5Proxy:
    host: str
    port: int = 1080
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_url(cls, url: str) -> Socks5Proxy:
        """``socks5h://[USER[:PASSWORD]@]HOST[:PORT]`` (port 1080); ValueError otherwise."""
        if not url.startswith("socks5h://"):
            raise ValueError(f"Unsupported proxy protocol: {url}")
        parts = urlsplit(url)
        if not parts.hostname:
            raise ValueError(f"Invalid proxy URL: {url}")
        return cls(
            parts.hostname,
            parts.port or 1080,
            unquote(parts.username) if parts.username is not None else None,
            unquote(parts.password) if parts.password is not None else None,
        )


async def _exactly(reader: asyncio.StreamReader, n: int) -> bytes:
    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError:
        raise ConnectionLost("the SOCKS5 proxy closed the connection") from None


async def open_socks5(
    proxy: Socks5Proxy,
    host: str,
    port: int,
    tls: ssl.SSLContext | None,
    server_hostname: str | None,
    local_address: str | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A stream to ``host``:``port`` through ``proxy`` (TLS inside it when ``tls`` is given)."""
    reader, writer = await asyncio.open_connection(
        proxy.host, proxy.port, local_addr=(local_address, 0) if local_address else None
    )
    try:
        userpass = proxy.username is not None
        writer.write(b"\x05\x02\x00\x02" if userpass else b"\x05\x01\x00")
        version, method = await _exactly(reader, 2)
        if version != 5 or method not in ((0, 2) if userpass else (0,)):
            raise ProxyError("the SOCKS5 proxy accepts none of our authentication methods", True)
        if method == 2:
            user = (proxy.username or "").encode()
            password = (proxy.password or "").encode()
            writer.write(bytes((1, len(user))) + user + bytes((len(password),)) + password)
            _, status = await _exactly(reader, 2)
            if status != 0:
                raise ProxyError("the SOCKS5 proxy refused the user name and password", True)
        try:
            address = ipaddress.ip_address(host)
            target = (b"\x01" if address.version == 4 else b"\x04") + address.packed
        except ValueError:
            name = host.encode("idna")
            target = b"\x03" + bytes((len(name),)) + name
        writer.write(b"\x05\x01\x00" + target + port.to_bytes(2, "big"))
        version, reply, _, kind = await _exactly(reader, 4)
        if version != 5 or reply != 0:
            why = _REPLIES.get(reply, f"reply {reply}")
            raise ProxyError(f"the SOCKS5 proxy could not connect to {host}:{port}: {why}")
        if kind == 1:
            await _exactly(reader, 4 + 2)
        elif kind == 4:
            await _exactly(reader, 16 + 2)
        elif kind == 3:
            (length,) = await _exactly(reader, 1)
            await _exactly(reader, length + 2)
        else:
            raise ProxyError(f"the SOCKS5 proxy answered address type {kind}")
        if tls is not None:
            await writer.start_tls(tls, server_hostname=server_hostname or host)
    except BaseException:
        writer.transport.abort()
        raise
    return reader, writer
