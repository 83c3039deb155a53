"""``bind_interface``: the addresses a listener binds when it is tied to a network interface.

Mosquitto 2.0 (``net__bind_interface`` in ``src/net.c``) does not use SO_BINDTODEVICE, which needs
root: for each address family the listener would open (``getaddrinfo`` of its address, or of
every address), it takes the interface's first address of that family (``getifaddrs``) and binds
to it; when the listener names an address too, that address must be the interface's, or that
socket is skipped with a warning. If no socket is left, the listener fails. midge does the same;
Python has no ``getifaddrs``, so the IPv4 address comes from the SIOCGIFADDR ioctl and the IPv6
addresses from ``/proc/net/if_inet6`` (Linux).
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

from midge.config import ConfigError, ListenerConfig

#: ioctl asking for an interface's (first) IPv4 address (linux/sockios.h).
SIOCGIFADDR = 0x8915
IF_INET6 = "/proc/net/if_inet6"


def ipv4_address(name: str) -> str | None:
    """The interface's IPv4 address, or None when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            reply = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()))
        except OSError:
            return None
    return socket.inet_ntoa(reply[20:24])


def ipv6_addresses(name: str) -> list[str]:
    """The interface's IPv6 addresses (a link-local one with its ``%name`` scope)."""
    found: list[str] = []
    try:
        with open(IF_INET6, encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if len(fields) != 6 or fields[5] != name:
            continue
        address = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
        found.append(f"{address}%{name}" if address.is_link_local else str(address))
    return found


def _error(listener: ListenerConfig, message: str) -> ConfigError:
    where = listener.where.get("bind_interface")
    if where is None:
        return ConfigError(f"listener on port {listener.port}: {message}")
    return ConfigError(message, where[0], where[1])


def _same(a: str, b: str) -> bool:
    return ipaddress.ip_address(a.split("%")[0]) == ipaddress.ip_address(b.split("%")[0])


def interface_hosts(listener: ListenerConfig) -> list[str]:
    """The addresses ``listener`` binds on its ``bind_interface`` (a ConfigError naming the line
    when there is none: an unknown interface, or no address of the families asked for)."""
    name = listener.bind_interface
    assert name is not None
    try:
        socket.if_nametoindex(name)
    except OSError:
        known = ", ".join(n for _, n in socket.if_nameindex())
        raise _error(
            listener,
            f"bind_interface: no network interface '{name}' on this machine (there are: "
            f"{known}); give one of them",
        ) from None
    families = {"ipv4": [socket.AF_INET], "ipv6": [socket.AF_INET6]}.get(
        listener.socket_domain or "", [socket.AF_INET, socket.AF_INET6]
    )
    mine: dict[int, str] = {}
    v4 = ipv4_address(name)
    if v4 is not None:
        mine[socket.AF_INET] = v4
    v6 = ipv6_addresses(name)
    if v6:
        mine[socket.AF_INET6] = v6[0]
    hosts: list[str] = []
    if listener.host:
        try:
            infos = socket.getaddrinfo(listener.host, None, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise _error(listener, f"cannot resolve the listener address: {exc}") from None
        for family, _, _, _, sockaddr in infos:
            if family not in families or family not in mine:
                continue
            if _same(str(sockaddr[0]), mine[family]) and mine[family] not in hosts:
                hosts.append(mine[family])
        if not hosts:
            raise _error(
                listener,
                f"bind_interface: the listener address {listener.host} is not an address of "
                f"interface '{name}' ({', '.join(mine.values()) or 'none'}); give one of its "
                "addresses, or no address",
            )
        return hosts
    hosts = [mine[f] for f in families if f in mine]
    if not hosts:
        wanted = " or ".join("IPv4" if f == socket.AF_INET else "IPv6" for f in families)
        raise _error(
            listener, f"bind_interface: interface '{name}' has no {wanted} address to listen on"
        )
    return hosts
