"""Mosquitto ACL files: syntax, and the decisions Mosquitto 2.0 makes from them.

Syntax (Mosquitto's ``acl_file``, src/security_default.c)::

    # a comment (a line starting with '#')
    topic [read|write|readwrite|deny] FILTER     # before any 'user' line: anonymous clients
    user USERNAME                                # the 'topic' lines after it are USERNAME's
    topic [read|write|readwrite|deny] FILTER
    pattern [read|write|readwrite|deny] FILTER   # anywhere: every client; %c = client id,
                                                 #           %u = username

No access word means readwrite; FILTER is the rest of the line (it may contain spaces). A ``user``
block may appear several times; its rules add up.

Decisions, exactly as Mosquitto evaluates them for a topic and an access (read or write):

1. the client's own rules — the ``user`` block for its username, or the section before any
   ``user`` line for an anonymous client — deny rules first: a matching ``deny`` refuses; then in
   file order, a matching rule that grants the access allows;
2. then the patterns, with ``%c``/``%u`` replaced (a pattern with ``%u`` does not apply to an
   anonymous client; a client whose id or username contains ``+`` or ``#`` is refused at this
   step, so it cannot widen a pattern): deny patterns first, then in order;
3. nothing matched: refused. A configured ACL file (even an empty one) refuses by default.

``$``-topics are matched only by rules whose filter starts with ``$`` (MQTT-4.7.2-1); ``$SYS``
is readable only where a rule allows it.

SUBSCRIBE: as Mosquitto 2.0 (security_default.c grants every filter), an ACL file refuses no
subscription; read access is checked on every delivery, routed or retained, so a client gets
the messages its rules let it read through any filter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from midge.codec.reasons import CodecError
from midge.codec.topics import validate_topic_filter
from midge.config import ConfigError, read_text_file

READ = 1
WRITE = 2
DENY = 0
_ACCESS = {"read": READ, "write": WRITE, "readwrite": READ | WRITE, "deny": DENY}

Levels = tuple[str, ...]


@dataclass(slots=True)
class Rule:
    filter: str
    access: int
    line: int


@dataclass(slots=True)
class AclFile:
    """A parsed ACL file: rules by user (None = anonymous), patterns, and notices to log."""

    path: str
    users: dict[str | None, list[Rule]] = field(default_factory=dict)
    patterns: list[Rule] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def for_client(self, client_id: str, username: str | None) -> ClientAcl:
        """The rules that apply to one client, compiled for its id and username."""
        own = self.users.get(username)
        user_rules = _ordered([(_split(r.filter), r.access) for r in own or ()])
        dangerous = (username is not None and ("+" in username or "#" in username)) or (
            "+" in client_id or "#" in client_id
        )
        patterns: list[tuple[Levels, int]] = []
        for r in self.patterns:
            if "%u" in r.filter and username is None:
                continue
            text = r.filter.replace("%c", client_id)
            if username is not None:
                text = text.replace("%u", username)
            patterns.append((_split(text), r.access))
        return ClientAcl(user_rules, _ordered(patterns), bool(self.patterns) and dangerous)


def _ordered(rules: list[tuple[Levels, int]]) -> list[tuple[Levels, int]]:
    """Deny rules first (Mosquitto puts them at the head of each list), then in file order."""
    return [r for r in rules if r[1] == DENY] + [r for r in rules if r[1] != DENY]


def _split(flt: str) -> Levels:
    return tuple(flt.split("/"))


def load_acl_file(path: str) -> AclFile:
    """Read an ACL file; a bad line is a :class:`ConfigError` naming ``path:line``."""
    return parse_acl(read_text_file(path, "ACL file"), path)


def parse_acl(text: str, path: str = "<string>") -> AclFile:
    acl = AclFile(path)
    user: str | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        keyword, _, rest = stripped.partition(" ")
        if keyword in ("topic", "pattern"):
            words = rest.lstrip(" ")
            if not words:
                raise ConfigError(
                    f"'{keyword}' needs a topic filter: {keyword} [read|write|readwrite|deny] "
                    "FILTER",
                    path,
                    lineno,
                )
            first, _, filt = words.partition(" ")
            filt = filt.strip()
            if filt:
                if first not in _ACCESS:
                    raise ConfigError(
                        f"invalid access '{first}': expected read, write, readwrite or deny "
                        f"(or no word for readwrite): {keyword} {first} {filt}",
                        path,
                        lineno,
                    )
                access = _ACCESS[first]
            else:
                filt, access = first, READ | WRITE
            check = filt.replace("%c", "c").replace("%u", "u") if keyword == "pattern" else filt
            try:
                validate_topic_filter(check)
            except CodecError as exc:
                raise ConfigError(
                    f"invalid topic filter '{filt}': {exc}; '+' and '#' must fill a whole "
                    "level and '#' must be last",
                    path,
                    lineno,
                ) from None
            rule = Rule(filt, access, lineno)
            if keyword == "topic":
                acl.users.setdefault(user, []).append(rule)
            else:
                if "%c" not in filt and "%u" not in filt:
                    acl.notices.append(
                        f"{path}:{lineno}: ACL pattern '{filt}' does not contain '%c' or '%u'"
                    )
                acl.patterns.append(rule)
        elif keyword == "user":
            name = rest.strip()
            if not name:
                raise ConfigError("'user' needs a username: user USERNAME", path, lineno)
            user = name
        else:
            raise ConfigError(
                f"invalid line: expected 'topic', 'pattern', 'user' or a '#' comment, not "
                f"'{keyword}'",
                path,
                lineno,
            )
    return acl


# ---------------------------------------------------------------------------------------------
# Matching


def matches(flt: Levels, topic: Levels) -> bool:
    """MQTT topic matching (MQTT-4.7.1): '+' one level, '#' this level and all below; a
    wildcard first level does not match a '$' topic (MQTT-4.7.2-1)."""
    if topic[0][:1] == "$" and flt[0] in ("+", "#"):
        return False
    n = len(topic)
    for i, f in enumerate(flt):
        if f == "#":
            return True
        if i >= n:
            return False
        if f != "+" and f != topic[i]:
            return False
    return len(flt) == n


class ClientAcl:
    """One client's compiled rules, with a bounded cache of decisions per topic."""

    __slots__ = ("_cache", "dangerous", "patterns", "user_rules")

    #: Decisions kept per client before the cache starts over (bounded memory per client).
    CACHE_SIZE = 256

    def __init__(
        self,
        user_rules: list[tuple[Levels, int]],
        patterns: list[tuple[Levels, int]],
        dangerous: bool,
    ) -> None:
        self.user_rules = user_rules
        self.patterns = patterns
        self.dangerous = dangerous
        self._cache: dict[tuple[str, int], bool] = {}

    def allowed(self, topic: str, access: int) -> bool:
        key = (topic, access)
        cache = self._cache
        hit = cache.get(key)
        if hit is not None:
            return hit
        result = self._decide(_split(topic), access)
        if len(cache) >= self.CACHE_SIZE:
            cache.clear()
        cache[key] = result
        return result

    def _decide(self, topic: Levels, access: int) -> bool:
        for flt, granted in self.user_rules:
            if matches(flt, topic):
                if granted == DENY:
                    return False
                if granted & access:
                    return True
        if self.patterns and self.dangerous:
            return False
        for flt, granted in self.patterns:
            if matches(flt, topic):
                if granted == DENY:
                    return False
                if granted & access:
                    return True
        return False
