"""The LDAP backend: a plugin (midge.auth.plugin) that asks a directory (docs/security.md, "LDAP").

``auth_ldap_url`` turns it on. A client logs in by binding as itself:

- **direct bind**: ``auth_ldap_bind_dn uid=%u,ou=people,dc=example,dc=org`` names the user's entry
  (``%u``: the MQTT user name, escaped as an RDN value, RFC 4514);
- **search then bind**: ``auth_ldap_search_base`` (and ``auth_ldap_search_filter``, default
  ``(uid=%u)``, ``%u`` escaped as a filter value, RFC 4515) is searched, as the service account
  ``auth_ldap_service_dn`` / ``auth_ldap_service_password`` when given (else anonymously); the
  one entry found is bound with the client's password.

An empty or missing password is refused without asking the directory: a simple bind with an empty
password is an unauthenticated bind (RFC 4513 5.1.2), which most servers accept, and is not a login.
Wrong password, unknown user (or several entries found) refuse with "bad user name or password"
(v5 0x86, 3.1.1 return code 4); a directory that cannot be reached or answers with an error
refuses with "not authorized" (0x87, return code 5): fail closed.

Authorization (only when ``auth_ldap_group_rule`` lines exist): at login the user's groups are
searched once (``auth_ldap_group_base`` / ``auth_ldap_group_filter``, ``%d`` the user's DN and
``%u`` the user name) and kept for ``auth_cache_ttl`` seconds per user name; each rule
``GROUP ACCESS FILTER`` (GROUP a value of ``auth_ldap_group_attribute``, a group DN, or ``*`` for
every user) grants ``read`` (subscribe), ``write`` (publish), ``readwrite`` or ``deny`` on a topic
filter with ``%u`` / ``%c`` substituted, evaluated as Mosquitto evaluates ACL lines: a matching
``deny`` refuses, then a matching grant allows, and anything else is refused.

ldap3 is blocking: every directory call runs in a worker thread (``asyncio.to_thread``), at most
``auth_ldap_pool_size`` at once, over connections kept open in a small pool (and opened again if
the server dropped them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from midge.auth.ldap_options import READ, WRITE, GroupRule, LdapSettings, normalize_dn
from midge.auth.ldap_options import parse_settings as parse_settings  # the tests' entry point
from midge.auth.plugin import Client, PluginError
from midge.codec.reasons import Reason
from midge.codec.topics import split_shared, topic_matches

log = logging.getLogger("midge.auth.ldap")

#: LDAP result code 49: wrong password, or no such entry (servers do not say which).
INVALID_CREDENTIALS = 49


class LdapUnavailable(Exception):
    """The directory could not answer (down, TLS failure, an error result): refuse."""


# ---------------------------------------------------------------------------------------------
# Authorization rules


def filter_covers(rule: str, flt: str) -> bool:
    """True if every topic that filter ``flt`` matches is matched by ``rule``.

    For a topic name this is :func:`topic_matches`; a ``+`` in ``flt`` is covered by ``+`` or
    ``#`` in ``rule``, a ``#`` only by ``#`` (it also matches the parent level, MQTT-4.7.1-2).
    """
    if "+" not in flt and "#" not in flt:
        return topic_matches(rule, flt)
    if flt.startswith("$") and rule[:1] in ("+", "#"):
        return False  # MQTT-4.7.2-1
    r_levels = rule.split("/")
    f_levels = flt.split("/")
    for i, r in enumerate(r_levels):
        if r == "#":
            return True
        if i >= len(f_levels) or f_levels[i] == "#":
            return False
        if r != "+" and r != f_levels[i]:
            return False
    return len(r_levels) == len(f_levels)


def decide(
    rules: list[GroupRule], groups: frozenset[str], client: Client, action: str, topic: str
) -> bool:
    """Mosquitto's ACL order: a matching deny refuses, a matching grant allows, else refused."""
    wanted = WRITE if action == "publish" else READ
    if action == "subscribe":
        topic = split_shared(topic)[1]
    username = client.username or ""
    applicable = [r for r in rules if r.group == "*" or r.group in groups]
    if any(r.pattern for r in applicable) and (
        any(c in username for c in "+#") or any(c in client.client_id for c in "+#")
    ):
        # As Mosquitto: a user name or client id with a wildcard could widen a pattern.
        log.info("ldap: denying %r: a wildcard in the user name or client id", client)
        return False
    check = topic_matches if action == "publish" else filter_covers
    allowed = False
    for rule in applicable:
        flt = rule.topic
        if rule.pattern:
            flt = _subst(flt, {"u": username, "c": client.client_id})
        if topic.startswith("$") and not flt.startswith("$"):
            continue  # as Mosquitto: only rules naming $ topics grant them
        if check(flt, topic):
            if rule.access == 0:
                return False
            if rule.access & wanted:
                allowed = True
    return allowed


# ---------------------------------------------------------------------------------------------
# The directory


def _subst(template: str, values: dict[str, str]) -> str:
    """``%u`` / ``%d`` in ``template`` replaced in one pass (a value is never read again)."""
    return re.sub(r"%([a-z])", lambda m: values.get(m.group(1), m.group(0)), template)


def _escape_filter(value: str) -> str:
    """RFC 4515 3: a value inside a search filter."""
    out = []
    for ch in value:
        if ch in "*()\\\0":
            out.append(f"\\{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def _escape_rdn(value: str) -> str:
    """RFC 4514 2.4: a value inside a DN."""
    out = []
    for i, ch in enumerate(value):
        if ch in ',+"\\<>;=' or ch == "\0":
            out.append("\\" + ch if ch != "\0" else "\\00")
        elif (ch == "#" and i == 0) or (ch == " " and (i == 0 or i == len(value) - 1)):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


class _Pool:
    """A few open ldap3 connections, each used by one thread at a time."""

    def __init__(self, opener: Callable[[], Any], size: int) -> None:
        self._open = opener
        self._size = size
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[tuple[Any, bool]]:
        """(connection, reused); a connection that failed is closed, not put back."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        reused = conn is not None
        if conn is None:
            conn = self._open()
        try:
            yield conn, reused
        except BaseException:
            _close(conn)
            raise
        with self._lock:
            if len(self._idle) < self._size:
                self._idle.append(conn)
                return
        _close(conn)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            _close(conn)


def _close(conn: Any) -> None:
    with contextlib.suppress(Exception):  # closing a broken socket
        conn.unbind()


class LdapAuth:
    """The plugin: ``authenticate`` by binding as the user (see the module docstring)."""

    def __init__(self, settings: LdapSettings, cache_ttl: float = 60.0) -> None:
        try:
            import ldap3
        except ImportError:
            raise PluginError(
                "auth_ldap_url needs the ldap3 package: pip install 'midge[auth]'"
            ) from None
        import ssl

        self.settings = settings
        self.cache_ttl = cache_ttl
        servers = []
        for url in settings.urls:
            tls = None
            if url.startswith("ldaps://") or settings.start_tls:
                host = url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
                tls = ldap3.Tls(
                    validate=ssl.CERT_REQUIRED,
                    ca_certs_file=settings.ca_file,
                    version=ssl.PROTOCOL_TLS_CLIENT,
                    sni=host,
                )
            servers.append((url, tls))
        #: Tried in order for each new connection (the first that answers is used). A Server is
        #: made for each: ldap3's remembers an address that failed and would not try it again.
        self._servers = servers
        self._pool = _Pool(self._open, settings.pool_size)
        self._limit = asyncio.Semaphore(settings.pool_size)
        #: user name -> (group names and DNs, until): filled at login, read by authorize
        self._groups: dict[str, tuple[frozenset[str], float]] = {}
        self._clock = time.monotonic

    # -- the plugin contract

    async def authenticate(self, client: Client) -> bool | int:
        if not client.username:
            return Reason.NOT_AUTHORIZED  # as Mosquitto answers anonymous clients it refuses
        if not client.password:
            return False  # an empty password is an anonymous bind, never a login
        try:
            async with self._limit:
                return await asyncio.to_thread(self._login, client.username, client.password)
        except LdapUnavailable as exc:
            log.warning("ldap: cannot check user %r: %s", client.username, exc)
            return Reason.NOT_AUTHORIZED

    async def close(self) -> None:
        await asyncio.to_thread(self._pool.close)

    # -- blocking work, in a thread

    def _open(self) -> Any:
        """A new connection to the first server that answers (StartTLS done if configured)."""
        import ldap3
        from ldap3.core.exceptions import LDAPException

        errors = []
        for url, tls in self._servers:
            server = ldap3.Server(
                url, tls=tls, connect_timeout=self.settings.timeout, get_info=ldap3.NONE
            )
            conn = ldap3.Connection(
                server,
                auto_bind=ldap3.AUTO_BIND_NONE,
                raise_exceptions=False,
                # (ldap3 sets SO_RCVTIMEO in whole seconds; the plugin timeout bounds the call)
                receive_timeout=max(1, math.ceil(self.settings.timeout)),
                read_only=True,
                auto_referrals=False,
            )
            try:
                conn.open(read_server_info=False)
                if self.settings.start_tls and not conn.start_tls(read_server_info=False):
                    raise LdapUnavailable(f"StartTLS refused: {conn.result.get('description')}")
                return conn
            except (LDAPException, LdapUnavailable) as exc:
                _close(conn)
                errors.append(f"{url}: {exc}")
        raise LdapUnavailable("cannot connect: " + "; ".join(errors))

    def _with_connection(self, work: Callable[[Any], Any]) -> Any:
        """``work(conn)`` on a pooled connection; once more on a new one if a kept connection
        was dropped by the server (restarted, idle timeout)."""
        from ldap3.core.exceptions import LDAPCommunicationError, LDAPException

        for attempt in (0, 1):
            try:
                with self._pool.connection() as (conn, reused):
                    try:
                        return work(conn)
                    except LDAPCommunicationError:
                        if reused and attempt == 0:
                            raise _Retry() from None
                        raise
            except _Retry:
                continue
            except LDAPException as exc:
                raise LdapUnavailable(str(exc)) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _bind(self, conn: Any, dn: str, password: bytes | str) -> bool:
        """True if the bind succeeded, False for invalid credentials, else LdapUnavailable."""
        if conn.rebind(user=dn, password=password, read_server_info=False):
            return True
        code = conn.result.get("result") if conn.result else None
        if code == INVALID_CREDENTIALS:
            return False
        raise LdapUnavailable(
            f"bind as {dn!r}: {conn.result.get('description') if conn.result else 'no answer'}"
        )

    def _service_bind(self, conn: Any) -> None:
        s = self.settings
        if s.service_dn is not None and s.service_password is not None:
            if not self._bind(conn, s.service_dn, s.service_password):
                raise LdapUnavailable(f"the service account {s.service_dn!r} cannot bind")
        else:
            import ldap3

            conn.user = conn.password = None  # (the last bind's, which ldap3 would send)
            if not conn.rebind(authentication=ldap3.ANONYMOUS, read_server_info=False):
                raise LdapUnavailable(f"anonymous bind refused: {conn.result}")

    def _search(self, conn: Any, base: str, flt: str, attributes: list[str]) -> list[Any]:
        import ldap3

        ok = conn.search(
            base, flt, search_scope=ldap3.SUBTREE, attributes=attributes, size_limit=1000
        )
        code = conn.result.get("result") if conn.result else None
        if not ok and code not in (0, 32):  # 32: no such object (an empty base)
            raise LdapUnavailable(f"search {flt} under {base!r}: {conn.result.get('description')}")
        return [e for e in conn.response or () if e.get("type") == "searchResEntry"]

    def _find_dn(self, conn: Any, username: str) -> str | None:
        s = self.settings
        assert s.search_base is not None
        self._service_bind(conn)
        found = self._search(
            conn, s.search_base, _subst(s.search_filter, {"u": _escape_filter(username)}), []
        )
        if len(found) != 1:
            if len(found) > 1:
                log.warning("ldap: %d entries match user %r; refused", len(found), username)
            return None
        return str(found[0]["dn"])

    def _login(self, username: str, password: bytes) -> bool:
        s = self.settings

        def work(conn: Any) -> bool:
            if s.bind_dn is not None:
                dn: str | None = _subst(s.bind_dn, {"u": _escape_rdn(username)})
            else:
                dn = self._find_dn(conn, username)
            if dn is None or not self._bind(conn, dn, password):
                return False
            if s.rules:
                if s.service_dn is not None:
                    self._service_bind(conn)
                self._remember(username, self._lookup_groups(conn, username, dn))
            return True

        ok: bool = self._with_connection(work)
        log.debug("ldap: user %r %s", username, "logged in" if ok else "refused")
        return ok

    def _lookup_groups(self, conn: Any, username: str, dn: str) -> frozenset[str]:
        s = self.settings
        assert s.group_base is not None
        flt = _subst(s.group_filter, {"d": _escape_filter(dn), "u": _escape_filter(username)})
        names: set[str] = set()
        for entry in self._search(conn, s.group_base, flt, [s.group_attribute]):
            names.add(normalize_dn(str(entry["dn"])))
            values = entry.get("attributes", {}).get(s.group_attribute, [])
            for value in values if isinstance(values, list) else [values]:
                names.add(str(value).lower())
        return frozenset(names)

    def _remember(self, username: str, groups: frozenset[str]) -> None:
        if len(self._groups) > 100_000:
            self._groups.clear()
        self._groups[username] = (groups, self._clock() + self.cache_ttl)

    def _refresh_groups(self, username: str) -> frozenset[str]:
        """The groups of a user, asked again as the service account."""
        s = self.settings

        def work(conn: Any) -> frozenset[str]:
            if s.bind_dn is not None:
                self._service_bind(conn)
                dn: str | None = _subst(s.bind_dn, {"u": _escape_rdn(username)})
            else:
                dn = self._find_dn(conn, username)
            return frozenset() if dn is None else self._lookup_groups(conn, username, dn)

        groups: frozenset[str] = self._with_connection(work)
        self._remember(username, groups)
        return groups


class _Retry(Exception):
    pass


class LdapAclAuth(LdapAuth):
    """:class:`LdapAuth` with ``authorize`` from group rules (only when rules are configured,
    so that without them the broker does not ask per PUBLISH)."""

    async def authorize(self, client: Client, action: str, topic: str) -> bool:
        username = client.username
        if not username:
            return False
        cached = self._groups.get(username)
        if cached is None or cached[1] <= self._clock():
            if self.settings.service_dn is not None:
                async with self._limit:
                    groups = await asyncio.to_thread(self._refresh_groups, username)
            elif cached is not None:
                # No service account: the groups read at the user's last login stand until the
                # next login.
                groups = cached[0]
            else:
                log.info("ldap: no groups known for %r (not logged in through LDAP)", username)
                groups = frozenset()
        else:
            groups = cached[0]
        return decide(self.settings.rules, groups, client, action, topic)


def create(settings: LdapSettings, cache_ttl: float = 60.0) -> LdapAuth:
    """The plugin for ``settings``: with ``authorize`` only if group rules are configured."""
    if settings.rules:
        return LdapAclAuth(settings, cache_ttl)
    return LdapAuth(settings, cache_ttl)
