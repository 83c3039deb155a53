"""The command lines of ``midge pub``, ``midge sub`` and ``midge rr``: mosquitto_pub's,
mosquitto_sub's and mosquitto_rr's flags with their meanings (parsed the way they parse them: in
order, each flag taking its fixed number of arguments, ``-D`` three or four)."""

from __future__ import annotations

import os
import ssl
import sys
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from midge.codec.packets import Properties
from midge.codec.properties import SPEC, Prop, PropType
from midge.tools.output import OutputOptions

#: mosquitto's -D command names.
COMMANDS = ("connect", "publish", "subscribe", "unsubscribe", "disconnect", "will", "auth")

_PROPS_BY_NAME = {p.name.lower().replace("_", "-"): p for p in Prop}


class UsageError(Exception):
    """A bad command line: printed as ``Error: ...`` and exit code 1, as mosquitto does."""


@dataclass
class Options:
    tool: str
    host: str = "localhost"
    port: int | None = None
    unix: str | None = None
    client_id: str | None = None
    id_prefix: str | None = None
    keepalive: int = 60
    username: str | None = None
    password: str | None = None
    version: int = 4
    qos: int = 0
    retain: bool = False
    clean: bool = True
    session_expiry: int | None = None
    topics: list[str] = field(default_factory=list)
    filter_outs: list[str] = field(default_factory=list)
    unsub_topics: list[str] = field(default_factory=list)
    response_topic: str | None = None
    #: pub/rr: "m" (-m), "f" (-f), "l" (-l), "n" (-n), "s" (-s)
    pub_mode: str | None = None
    message: bytes = b""
    output: OutputOptions = field(default_factory=OutputOptions)
    no_retain: bool = False
    retained_only: bool = False
    remove_retained: bool = False
    msg_count: int = 0
    timeout: int = 0
    exit_after_sub: bool = False
    quiet: bool = False
    debug: bool = False
    properties: dict[str, Properties] = field(default_factory=dict)
    will_topic: str | None = None
    will_payload: bytes | None = None
    will_qos: int = 0
    will_retain: bool = False
    cafile: str | None = None
    capath: str | None = None
    cert: str | None = None
    key: str | None = None
    insecure: bool = False
    tls_version: str | None = None
    tls_alpn: str | None = None
    tls_use_os_certs: bool = False
    ciphers: str | None = None
    bind_address: str | None = None
    #: --ws: MQTT over WebSocket (a midge extension; Mosquitto 2.0's tools have none)
    ws: bool = False
    #: --proxy socks5h://[user[:password]@]host[:port]
    proxy: str | None = None
    retain_as_published: bool = False
    #: -M: QoS 1/2 messages in flight at once (mosquitto's default 20)
    max_inflight: int = 20
    repeat: int = 1
    repeat_delay: float = 0.0
    #: --random-filter: print a message when random() % 10000 is below this
    random_filter: int = 10000

    def tls_context(self) -> ssl.SSLContext | None:
        """TLS as mosquitto's tools decide: with --cafile / --capath, with --tls-use-os-certs
        (the system's CA certificates), or on port 8883 with neither (the system's too)."""
        if self.cafile or self.capath:
            context = ssl.create_default_context(cafile=self.cafile, capath=self.capath)
            if self.tls_use_os_certs:
                context.load_default_certs()
        elif self.tls_use_os_certs or (self.port == 8883 and self.unix is None):
            context = ssl.create_default_context()
        else:
            return None
        if self.insecure:
            context.check_hostname = False
        if self.cert or self.key:
            if not (self.cert and self.key):
                raise UsageError(
                    "Both certfile and keyfile must be provided if one of them is set."
                )
            context.load_cert_chain(self.cert, self.key)
        if self.tls_version:
            versions = {
                "tlsv1.3": ssl.TLSVersion.TLSv1_3,
                "tlsv1.2": ssl.TLSVersion.TLSv1_2,
                "tlsv1.1": ssl.TLSVersion.TLSv1_1,
            }
            if self.tls_version not in versions:
                raise UsageError(f"Invalid --tls-version {self.tls_version}.")
            # The lowest version accepted, as libmosquitto's (it disables only the older ones).
            context.minimum_version = versions[self.tls_version]
        if self.ciphers is not None:
            context.set_ciphers(self.ciphers)  # an OpenSSL cipher list (TLS 1.2 and below)
        if self.tls_alpn is not None:
            context.set_alpn_protocols([self.tls_alpn])
        return context

    def props(self, command: str) -> Properties:
        return self.properties.get(command, {})


def _int(flag: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise UsageError(f"Invalid value for {flag}: {value!r}.") from None
    if not low <= number <= high:
        raise UsageError(f"Invalid value for {flag}: {value}.")
    return number


def _property(opts: Options, args: list[str], i: int) -> int:
    """Parse ``-D command identifier value [value]`` at args[i]; return the next index."""
    if len(args) < i + 3:
        raise UsageError("-D argument given but not enough values.")
    command, name = args[i].lower(), args[i + 1].lower()
    if command not in COMMANDS:
        raise UsageError(f"Invalid command {args[i]} given in -D.")
    prop = _PROPS_BY_NAME.get(name)
    if prop is None:
        raise UsageError(f"Invalid property name {args[i + 1]} given in -D.")
    spec = SPEC.get(prop)
    kind = spec[0] if spec else PropType.UTF8
    props = opts.properties.setdefault(command, {})
    value = args[i + 2]
    parsed: Any
    if kind == PropType.UTF8_PAIR:
        if len(args) < i + 4:
            raise UsageError("-D user-property given but not enough values.")
        props.setdefault(prop, []).append((value, args[i + 3]))
        return i + 4
    if kind == PropType.BYTE:
        parsed = _int(name, value, 0, 255)
    elif kind == PropType.TWO_BYTE:
        parsed = _int(name, value, 0, 65535)
    elif kind == PropType.FOUR_BYTE:
        parsed = _int(name, value, 0, 2**32 - 1)
    elif kind == PropType.VARINT:
        parsed = _int(name, value, 0, 268435455)
    elif kind == PropType.BINARY:
        parsed = os.fsencode(value)
    else:
        parsed = value
    if prop == Prop.SUBSCRIPTION_IDENTIFIER:
        props[prop] = [parsed]
    else:
        props[prop] = parsed
    return i + 3


#: Flags that take one argument: flag -> Options attribute (or a handler name).
_WITH_ARG = {
    "-h": "host",
    "--host": "host",
    "-p": "port",
    "--port": "port",
    "-L": "url",
    "--url": "url",
    "-i": "client_id",
    "--id": "client_id",
    "-I": "id_prefix",
    "--id-prefix": "id_prefix",
    "-k": "keepalive",
    "--keepalive": "keepalive",
    "-u": "username",
    "--username": "username",
    "-P": "password",
    "--pw": "password",
    "-V": "version",
    "--protocol-version": "version",
    "-q": "qos",
    "--qos": "qos",
    "-x": "session_expiry",
    "--session-expiry-interval": "session_expiry",
    "-t": "topic",
    "--topic": "topic",
    "-T": "filter_out",
    "--filter-out": "filter_out",
    "-U": "unsubscribe",
    "--unsubscribe": "unsubscribe",
    "-m": "message",
    "--message": "message",
    "-f": "file",
    "--file": "file",
    "-C": "msg_count",
    "-W": "timeout",
    "-F": "format",
    "-e": "response_topic",
    "--unix": "unix",
    "--will-topic": "will_topic",
    "--will-payload": "will_payload",
    "--will-qos": "will_qos",
    "--cafile": "cafile",
    "--capath": "capath",
    "--cert": "cert",
    "--key": "key",
    "--tls-version": "tls_version",
    "--repeat": "repeat",
    "--repeat-delay": "repeat_delay",
    "-A": "bind_address",
    "--ciphers": "ciphers",
    "--tls-alpn": "tls_alpn",
    "-M": "max_inflight",
    "--random-filter": "random_filter",
    "--proxy": "proxy",
    "--psk": "psk",
    "--psk-identity": "psk",
    "--tls-engine": "engine",
    "--keyform": "engine",
    "--tls-engine-kpass-sha1": "engine",
}

#: What cannot work on Python's ssl module, or is not written yet: refused, saying why.
_IMPOSSIBLE = {
    "psk": "TLS-PSK needs OpenSSL's PSK callbacks, which Python's ssl module offers only from "
    "Python 3.13; midge's client has no TLS-PSK. Use certificates (--cafile, --cert, --key).",
    "engine": "OpenSSL engines are not reachable from Python's ssl module; midge's client "
    "cannot use a TLS engine. Use a PEM --key file.",
}

_FLAGS = {
    "-c": "clean",
    "--disable-clean-session": "clean",
    "-r": "retain",
    "--retain": "retain",
    "-l": "stdin_line",
    "--stdin-line": "stdin_line",
    "-n": "null_message",
    "--null-message": "null_message",
    "-s": "stdin_file",
    "--stdin-file": "stdin_file",
    "-v": "verbose",
    "--verbose": "verbose",
    "-N": "no_eol",
    "-R": "no_retain",
    "-E": "exit_after_sub",
    "--retained-only": "retained_only",
    "--remove-retained": "remove_retained",
    "--pretty": "pretty",
    "--json": "json",
    "--quiet": "quiet",
    "-d": "debug",
    "--debug": "debug",
    "--will-retain": "will_retain",
    "--insecure": "insecure",
    "--nodelay": "nodelay",
    "--ws": "ws",
    "--tls-use-os-certs": "tls_use_os_certs",
    "--retain-as-published": "retain_as_published",
}

#: Flags that only some tools take (mosquitto's client_config_line_proc rejects the others).
_ONLY = {
    "pub": {
        "-l",
        "--stdin-line",
        "-n",
        "--null-message",
        "-s",
        "--stdin-file",
        "-m",
        "--message",
        "-f",
        "--file",
        "-r",
        "--retain",
        "--repeat",
        "--repeat-delay",
    },
    "sub": {
        "-C",
        "-E",
        "--retained-only",
        "--remove-retained",
        "-T",
        "--filter-out",
        "-U",
        "--unsubscribe",
        "--json",
        "--random-filter",
    },
    "rr": {"-e"},
    "sub,rr": {"-F", "-v", "--verbose", "-N", "--pretty", "-W", "-R", "--retain-as-published"},
    "pub,rr": {
        "-m",
        "--message",
        "-f",
        "--file",
        "-n",
        "--null-message",
        "-s",
        "--stdin-file",
    },
}


def _allowed(tool: str, flag: str) -> bool:
    owners = [tools for tools, flags in _ONLY.items() if flag in flags]
    return not owners or any(tool in tools.split(",") for tools in owners)


def _set_message(opts: Options, mode: str, data: bytes) -> None:
    if opts.pub_mode is not None:
        raise UsageError("Only one type of message can be sent at once.")
    opts.pub_mode = mode
    opts.message = data


def defaults_file(tool: str) -> str | None:
    """Mosquitto's per-user options file for ``tool``: ``$XDG_CONFIG_HOME/mosquitto_TOOL``, else
    ``$HOME/.config/mosquitto_TOOL``. midge's tools read the same file, so a user's defaults
    (``-h``, ``-p``, ``--cafile`` ...) follow them from one tool to the other."""
    base = os.environ.get("XDG_CONFIG_HOME")
    if base:
        return os.path.join(base, f"mosquitto_{tool}")
    home = os.environ.get("HOME")
    return os.path.join(home, ".config", f"mosquitto_{tool}") if home else None


def file_args(path: str | None) -> list[str]:
    """The options of a defaults file as mosquitto reads them: one option a line, the flag up
    to the first space and the rest of the line as its one argument; lines starting with ``#``
    are comments."""
    if path is None:
        return []
    try:
        with open(path, "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    args: list[str] = []
    for raw in lines:
        if raw.startswith(b"#"):
            continue
        line = os.fsdecode(raw.rstrip(b"\r\n"))
        flag, _, rest = line.lstrip(" ").partition(" ")  # strtok(line, " "), strtok(NULL, "")
        if flag:
            args.append(flag)
            if rest:
                args.append(rest)
    return args


def parse(tool: str, args: list[str], defaults: bool = True) -> Options:
    """Parse a command line of ``midge TOOL`` (``pub``, ``sub`` or ``rr``), after the options of
    the user's defaults file (:func:`defaults_file`) unless ``defaults`` is False."""
    if defaults:
        args = file_args(defaults_file(tool)) + list(args)
    opts = Options(tool=tool, version=5 if tool == "rr" else 4)
    i = 0
    while i < len(args):
        flag = args[i]
        if flag == "--help":
            raise SystemExit("help")
        if flag == "--version":
            raise SystemExit("version")
        if not _allowed(tool, flag) or (
            flag not in _WITH_ARG and flag not in _FLAGS and flag not in ("-D", "--property")
        ):
            raise UsageError(f"Unknown option '{flag}'.")
        if flag == "-D" or flag == "--property":
            i = _property(opts, args, i + 1)
            continue
        if flag in _FLAGS:
            _flag(opts, _FLAGS[flag])
            i += 1
            continue
        if i + 1 >= len(args):
            raise UsageError(f"{flag} argument given but no value specified.")
        value = args[i + 1]
        name = _WITH_ARG[flag]
        i += 2
        if name == "url":
            _url(opts, value)
        elif name == "port":
            opts.port = _int(flag, value, 0, 65535)
        elif name == "keepalive":
            opts.keepalive = _int(flag, value, 0, 65535)
        elif name == "qos":
            opts.qos = _int(flag, value, 0, 2)
        elif name == "will_qos":
            opts.will_qos = _int(flag, value, 0, 2)
        elif name == "version":
            versions = {"mqttv5": 5, "5": 5, "mqttv311": 4, "311": 4, "mqttv31": 3, "31": 3}
            if value.lower() not in versions:
                raise UsageError("Invalid protocol version argument given.")
            opts.version = versions[value.lower()]
        elif name == "session_expiry":
            if value in ("-1", "∞"):
                opts.session_expiry = 0xFFFFFFFF
            else:
                opts.session_expiry = _int(flag, value, 0, 0xFFFFFFFF)
        elif name == "topic":
            opts.topics.append(value)
        elif name == "filter_out":
            opts.filter_outs.append(value)
        elif name == "unsubscribe":
            opts.unsub_topics.append(value)
        elif name == "message":
            _set_message(opts, "m", os.fsencode(value))
        elif name == "file":
            try:
                with open(value, "rb") as f:
                    data = f.read()
            except OSError:
                raise UsageError(f'Unable to read file "{value}".') from None
            _set_message(opts, "f", data)
        elif name == "msg_count":
            opts.msg_count = _int(flag, value, 1, 2**31 - 1)
        elif name == "timeout":
            opts.timeout = _int(flag, value, 1, 3600)
        elif name == "format":
            check_format(value)
            opts.output.format = os.fsencode(value)
        elif name == "will_payload":
            opts.will_payload = os.fsencode(value)
        elif name == "repeat":
            opts.repeat = _int(flag, value, 1, 2**31 - 1)
        elif name == "repeat_delay":
            try:
                opts.repeat_delay = float(value)
            except ValueError:
                raise UsageError(f"Invalid --repeat-delay {value!r}.") from None
        elif name == "random_filter":
            try:
                percent = float(value)
            except ValueError:
                raise UsageError(f"Invalid --random-filter {value!r}.") from None
            if not 0.1 <= percent <= 100.0:
                raise UsageError("--random-filter must be between 0.1 and 100.0.")
            opts.random_filter = int(percent * 100)
        elif name == "max_inflight":
            try:
                opts.max_inflight = int(value)
            except ValueError:
                opts.max_inflight = 0
            if opts.max_inflight < 1:
                raise UsageError("Maximum inflight messages must be greater than 0.\n")
        elif name == "proxy":
            if not value.startswith("socks5h://"):
                raise UsageError(f"Unsupported proxy protocol: {value}")
            opts.proxy = value
        elif name in _IMPOSSIBLE:
            raise UsageError(f"{flag}: {_IMPOSSIBLE[name]}")
        else:
            setattr(opts, name, value)
    _check(opts)
    return opts


_SPECIFIERS = set("%ACDEFIlmPpqRSrtjJUxX")
_ESCAPES = set("\\0aenrtv")


def check_format(fmt: str) -> None:
    """Reject what mosquitto_sub rejects in a -F template: an unknown ``%`` conversion or ``\\``
    escape, and a ``%``, ``@`` or ``\\`` with nothing after it."""
    n = len(fmt)
    i = 0
    incomplete = "Incomplete format specifier."
    while i < n:
        c = fmt[i]
        if c == "%":
            if i == n - 1:
                raise UsageError(incomplete)
            if fmt[i + 1] in "0-":
                i += 1
                if i == n - 1:
                    raise UsageError(incomplete)
            while fmt[i + 1].isdigit():
                i += 1
                if i == n - 1:
                    raise UsageError(incomplete)
            if fmt[i + 1] == ".":
                i += 1
                if i == n - 1:
                    raise UsageError(incomplete)
                while fmt[i + 1].isdigit():
                    i += 1
                    if i == n - 1:
                        raise UsageError(incomplete)
            if fmt[i + 1] not in _SPECIFIERS:
                raise UsageError(f"Invalid format specifier '{fmt[i + 1]}'.")
            i += 1
        elif c == "@":
            if i == n - 1:
                raise UsageError(incomplete)
            i += 1
        elif c == "\\":
            if i == n - 1:
                raise UsageError("Incomplete escape specifier.")
            if fmt[i + 1] not in _ESCAPES:
                raise UsageError(f"Invalid escape specifier '{fmt[i + 1]}'.")
            i += 1
        i += 1


def _flag(opts: Options, name: str) -> None:
    if name == "clean":
        opts.clean = False
    elif name == "stdin_line":
        _set_message(opts, "l", b"")
    elif name == "null_message":
        _set_message(opts, "n", b"")
    elif name == "stdin_file":
        _set_message(opts, "s", sys.stdin.buffer.read())
    elif name == "verbose":
        opts.output.verbose = True
    elif name == "no_eol":
        opts.output.eol = False
    elif name == "pretty":
        opts.output.pretty = True
    elif name == "json":
        opts.output.format = b"%j"
    elif name == "nodelay":
        pass  # asyncio streams already disable Nagle's algorithm
    else:
        setattr(opts, name, True)


def _url(opts: Options, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise UsageError("Unsupported URL scheme.")
    if parts.scheme == "mqtts" and not (opts.cafile or opts.capath):
        opts.capath = ssl.get_default_verify_paths().capath or "/etc/ssl/certs"
    if parts.username is not None:
        opts.username = unquote(parts.username)
    if parts.password is not None:
        opts.password = unquote(parts.password)
    opts.host = parts.hostname or "localhost"
    opts.port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    topic = parts.path[1:]
    if topic:
        opts.topics.append(unquote(topic))


def _check(opts: Options) -> None:
    if opts.will_payload is not None and opts.will_topic is None:
        raise UsageError("Will payload given, but no will topic given.")
    if opts.will_retain and opts.will_topic is None:
        raise UsageError("Will retain given, but no will topic given.")
    if opts.password is not None and opts.username is None:
        raise UsageError("Password given, but no username given.")
    if not opts.clean and not opts.client_id and not opts.id_prefix:
        raise UsageError("You must provide a client id if you are using the -c option.")
    if opts.session_expiry is not None and opts.version != 5:
        raise UsageError("--session-expiry-interval is only valid with MQTT v5.")
    if opts.properties and opts.version != 5:
        raise UsageError("-D/--property is only valid with MQTT v5.")
    if opts.tool in ("pub", "sub") and not opts.topics:
        raise UsageError(
            "No topic specified!"
            if opts.tool == "pub"
            else "You must specify a topic to subscribe to."
        )
    if opts.tool == "rr":
        if not opts.topics:
            raise UsageError("No topic specified!")
        if opts.response_topic is None:
            raise UsageError("No response topic specified!")
    if opts.tool in ("pub", "rr") and opts.pub_mode is None:
        raise UsageError("Nothing to publish (give -m, -f, -l, -n or -s).")
    if opts.tool == "pub" and len(opts.topics) > 1:
        raise UsageError("Only one topic can be used with midge pub.")
    if opts.no_retain and opts.retained_only:
        raise UsageError("Combining '-R' and '--retained-only' makes no sense.")
    if opts.id_prefix:
        opts.client_id = f"{opts.id_prefix}{os.getpid()}"


def usage(tool: str) -> str:
    common = (
        "  connection: -h host -p port | -L mqtt(s)://[user[:pass]@]host[:port]/topic\n"
        "              --unix path | --ws (MQTT over WebSocket), -A bind-address, -d (debug)\n"
        "              -i id | -I prefix, -k keepalive, -u user -P password,\n"
        "              -V mqttv5|mqttv311|mqttv31, -M max-inflight,\n"
        "              -q qos, -c (persistent session), -x session-expiry, --will-topic T\n"
        "              [--will-payload P --will-qos Q --will-retain], -D command property value\n"
        "  TLS:        --cafile F | --capath D | --tls-use-os-certs, --cert F --key F,\n"
        "              --insecure, --tls-version V, --ciphers LIST, --tls-alpn PROTOCOL\n"
    )
    if tool == "pub":
        return (
            "Usage: midge pub -t topic {-m message | -f file | -l | -n | -s} [-r] [--repeat N "
            "[--repeat-delay S]]\n" + common
        )
    if tool == "sub":
        return (
            "Usage: midge sub -t topic [-t ...] [-v] [-N] [-F format | --json [--pretty]] [-C n] "
            "[-W secs]\n       [-R | --retained-only] [--remove-retained] [-T filter] [-U topic] "
            "[-E]\n" + common
        )
    return (
        "Usage: midge rr -t topic -e response-topic {-m message | -f file | -n | -s} "
        "[-v] [-N] [-F format] [-W secs]\n" + common
    )
