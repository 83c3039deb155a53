"""The PROXY protocol header parsers (midge.transport.proxy), sans-IO: every header here is
built byte by byte from the spec (haproxy.org/download/2.9/doc/proxy-protocol.txt)."""

from __future__ import annotations

import socket
import struct

import pytest

from midge.transport.proxy import (
    V1_MAX,
    V2_MAX_BODY,
    V2_SIGNATURE,
    ProxyError,
    parse_v1,
    parse_v2,
    v1_line_end,
    v2_length,
)


def v2(
    command: int = 1,
    fam: int = 0x11,
    addresses: bytes | None = None,
    tlvs: bytes = b"",
    version: int = 2,
) -> bytes:
    """A v2 header: signature, version/command, family/transport, length, addresses, TLVs."""
    if addresses is None:
        addresses = socket.inet_aton("192.0.2.5") + socket.inet_aton("10.0.0.1")
        addresses += struct.pack("!HH", 6275, 1883)
    body = addresses + tlvs
    return V2_SIGNATURE + bytes([version << 4 | command, fam]) + struct.pack("!H", len(body)) + body


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


def ssl_tlv(client: int, verify: int, *subs: bytes) -> bytes:
    return tlv(0x20, bytes([client]) + struct.pack("!I", verify) + b"".join(subs))


def test_v1_tcp4_tcp6_unknown() -> None:
    o = parse_v1(b"PROXY TCP4 192.0.2.5 127.0.0.1 6275 1883\r\n")
    assert (o.host, o.port, o.peer, o.local) == ("192.0.2.5", 6275, "192.0.2.5:6275", False)
    o = parse_v1(b"PROXY TCP6 2001:db8::5 ::1 40000 1883\r\n")
    assert (o.host, o.port) == ("2001:db8::5", 40000)
    # UNKNOWN: the rest of the line is ignored, the socket's own address stays (spec 2.1).
    assert parse_v1(b"PROXY UNKNOWN\r\n").host is None
    assert parse_v1(b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n").peer is None
    longest = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff"
    longest += b":ffff:ffff 65535 65535\r\n"
    assert parse_v1(longest).port == 65535
    # The spec's worst case, 107 bytes: UNKNOWN with the longest TCP6 fields.
    f = b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    worst = b"PROXY UNKNOWN " + f + b" " + f + b" 65535 65535\r\n"
    assert len(worst) == V1_MAX and parse_v1(worst).peer is None


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP3 192.0.2.5 127.0.0.1 6275 1234\r\n",  # unknown protocol
        b"PROXY TCP4 192.0.2.5 127.0.0.1 6275\r\n",  # missing destination port
        b"PROXY TCP4 192.0.2.5 127.0.0.1\r\n",
        b"PROXY TCP4 192.0.2.5\r\n",
        b"PROXY TCP4 \r\n",
        b"PROXY TCP4 192.0.2.5 127.0.0.1 6275 1234 extra\r\n",
        b"PROXY TCP4 192.0.2.5 127.0.0.1 6275 0\r\n",  # port 0
        b"PROXY TCP4 192.0.2.5 127.0.0.1 65536 1234\r\n",
        b"PROXY TCP4 192.0.2.5 127.0.0.1 06275 1234\r\n",  # leading zero
        b"PROXY TCP4 192.0.2.5 127.0.0.1 -1 1234\r\n",
        b"PROXY TCP4 192.0.2.256 127.0.0.1 6275 1234\r\n",  # bad address
        b"PROXY TCP4 2001:db8::5 127.0.0.1 6275 1234\r\n",  # IPv6 in TCP4
        b"PROXY TCP6 192.0.2.5 ::1 6275 1234\r\n",  # IPv4 in TCP6
        b"PROXY  TCP4 192.0.2.5 127.0.0.1 6275 1234\r\n",  # two spaces
        b"PROXY TCP4 192.0.2.5 127.0.0.1 6275 1234\n",  # LF only
        b"proxy TCP4 192.0.2.5 127.0.0.1 6275 1234\r\n",
        b"PROXY TCP4 192.0.2.5 127.0.0.1 6275 1234" + b" " * 70 + b"\r\n",  # too long
    ],
)
def test_v1_malformed_refused(line: bytes) -> None:
    with pytest.raises(ProxyError):
        parse_v1(line)


def test_v1_line_end_refuses_early() -> None:
    assert v1_line_end(b"PRO") == 0
    assert v1_line_end(b"PROXY TCP4 1.2.3.4") == 0
    assert v1_line_end(b"PROXY UNKNOWN\r\n\x10\x0c") == len(b"PROXY UNKNOWN\r\n")
    with pytest.raises(ProxyError, match="no PROXY v1 header"):
        v1_line_end(b"\x10\x0c\x00\x04MQTT")  # a client speaking MQTT straight away
    with pytest.raises(ProxyError, match="longer than 107"):
        v1_line_end(b"PROXY " + b"x" * 200)


def test_v2_ipv4_ipv6_unix() -> None:
    o = parse_v2(v2())
    assert (o.peer, o.local, o.tls) == ("192.0.2.5:6275", False, False)
    addresses = socket.inet_pton(socket.AF_INET6, "2001:db8::5") + bytes(16)
    o = parse_v2(v2(fam=0x21, addresses=addresses + struct.pack("!HH", 443, 1883)))
    assert o.peer == "2001:db8::5:443"
    mapped = socket.inet_pton(socket.AF_INET6, "::ffff:192.0.2.9") + bytes(16)
    assert parse_v2(v2(fam=0x21, addresses=mapped + bytes(4))).host == "192.0.2.9"
    path = b"/run/client.sock".ljust(108, b"\0") + bytes(108)
    assert parse_v2(v2(fam=0x31, addresses=path)).peer == "/run/client.sock"


def test_v2_local_and_unspec_keep_the_socket_address() -> None:
    # LOCAL (health checks): the receiver must use the real endpoints (spec 2.2).
    o = parse_v2(v2(command=0, fam=0x00, addresses=b""))
    assert o.local and o.peer is None
    # LOCAL with an address block and TLVs: all ignored
    assert parse_v2(v2(command=0, tlvs=tlv(0x04, b"xx"))).peer is None
    o = parse_v2(v2(fam=0x00, addresses=b""))  # PROXY with UNSPEC: unknown protocol
    assert not o.local and o.peer is None


def test_v2_tls_tlvs() -> None:
    cn = tlv(0x22, b"device-7")
    version = tlv(0x21, b"TLSv1.3")
    cipher = tlv(0x23, b"TLS_AES_128_GCM_SHA256")
    o = parse_v2(v2(tlvs=tlv(0x05, b"unique") + ssl_tlv(0x07, 0, version, cn, cipher)))
    assert (o.tls, o.cert_verified, o.common_name) == (True, True, "device-7")
    assert o.cipher == "TLS_AES_128_GCM_SHA256"
    o = parse_v2(v2(tlvs=ssl_tlv(0x01, 0, version)))  # TLS, no certificate
    assert (o.tls, o.cert_verified, o.common_name) == (True, False, None)
    o = parse_v2(v2(tlvs=ssl_tlv(0x05, 1, cn)))  # a certificate that failed verification
    assert (o.tls, o.cert_verified, o.common_name) == (True, False, "device-7")
    o = parse_v2(v2(tlvs=ssl_tlv(0x04, 0, cn)))  # no PP2_CLIENT_SSL bit
    assert (o.tls, o.cert_verified) == (False, False)


@pytest.mark.parametrize(
    "header",
    [
        b"\r\n\r\n\x00\r\nQUIX\n" + bytes([0x21, 0x11, 0, 12]) + bytes(12),  # signature
        v2(version=1),
        v2(version=3),
        v2(command=2),
        v2(fam=0x41),  # unknown family
        v2(fam=0x13),  # unknown transport
        v2(fam=0x12),  # datagram
        v2(addresses=bytes(8)),  # address block too short for IPv4
        v2(fam=0x21, addresses=bytes(12)),  # ... for IPv6
        v2(tlvs=b"\x20\x00"),  # truncated TLV
        v2(tlvs=tlv(0x04, b"ab")[:-1]),  # TLV longer than the header
        v2(tlvs=tlv(0x20, b"\x01\x00")),  # SSL TLV shorter than 5 bytes
        v2(tlvs=ssl_tlv(0x07, 0, tlv(0x22, b"a\0b"))),  # NUL in the CN
        v2(tlvs=ssl_tlv(0x07, 0, tlv(0x22, b"\xff"))),  # CN not UTF-8
        v2(tlvs=tlv(0x04, bytes(V2_MAX_BODY))),  # oversized
    ],
)
def test_v2_malformed_refused(header: bytes) -> None:
    with pytest.raises(ProxyError):
        parse_v2(header)


def test_v2_length_refuses_early() -> None:
    assert v2_length(V2_SIGNATURE[:5]) == 0
    assert v2_length(v2()[:16]) == len(v2())
    with pytest.raises(ProxyError, match="bad signature"):
        v2_length(b"PROXY TCP4 1.2.")  # a v1 header on a v2 listener
    with pytest.raises(ProxyError, match="bad signature"):
        v2_length(b"\x10\x0c\x00\x04")  # MQTT straight away
    with pytest.raises(ProxyError, match="at most"):
        v2_length(V2_SIGNATURE + b"\x21\x11\xff\xff")
