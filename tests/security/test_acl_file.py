"""The ACL file reader and Mosquitto 2.0's decisions (src/security_default.c), rule by rule."""

from __future__ import annotations

import pytest

from midge.auth.acl import READ, WRITE, parse_acl
from midge.config import ConfigError

ACL = """\
# anonymous clients: the section before any 'user' line
topic read public/#
topic anon/write-only
user alice
topic readwrite alice/#
topic deny alice/secret
topic write   alerts/with space
topic read $SYS/broker/#
user bob
topic bob/#
user alice
topic read shared/+/status
pattern readwrite clients/%c/#
pattern read users/%u/inbox
pattern deny clients/%c/locked
"""


def acl_for(client_id: str, username: str | None, text: str = ACL):  # type: ignore[no-untyped-def]
    return parse_acl(text, "acl").for_client(client_id, username)


def test_every_rule_kind_parses_with_its_line() -> None:
    acl = parse_acl(ACL, "acl")
    anon = acl.users[None]
    assert [(r.filter, r.access, r.line) for r in anon] == [
        ("public/#", READ, 2),
        ("anon/write-only", READ | WRITE, 3),  # no access word: readwrite
    ]
    alice = acl.users["alice"]  # two 'user alice' blocks add up
    assert [r.filter for r in alice] == [
        "alice/#",
        "alice/secret",
        "alerts/with space",  # the filter is the rest of the line
        "$SYS/broker/#",
        "shared/+/status",
    ]
    assert [r.access for r in alice] == [READ | WRITE, 0, WRITE, READ, READ]
    assert [(r.filter, r.line) for r in acl.patterns] == [
        ("clients/%c/#", 13),
        ("users/%u/inbox", 14),
        ("clients/%c/locked", 15),
    ]
    assert acl.notices == []


def test_user_rules_and_deny_precedence() -> None:
    alice = acl_for("a1", "alice")
    assert alice.allowed("alice/x", WRITE) and alice.allowed("alice/x/y", READ)
    assert not alice.allowed("alice/secret", READ)  # deny wins though alice/# comes first
    assert not alice.allowed("alice/secret", WRITE)
    assert alice.allowed("alerts/with space", WRITE)
    assert not alice.allowed("alerts/with space", READ)  # write-only
    assert not alice.allowed("public/news", READ)  # the anonymous section is not alice's
    assert not alice.allowed("bob/x", READ)


def test_anonymous_gets_the_global_section_and_patterns() -> None:
    anon = acl_for("c9", None)
    assert anon.allowed("public/news", READ)
    assert not anon.allowed("public/news", WRITE)
    assert anon.allowed("anon/write-only", WRITE)
    assert anon.allowed("clients/c9/x", WRITE)  # %c applies to anonymous clients
    assert not anon.allowed("users/None/inbox", READ)  # %u patterns skip anonymous clients


def test_patterns_substitute_client_id_and_username() -> None:
    alice = acl_for("dev-1", "alice")
    assert alice.allowed("clients/dev-1/temp", WRITE)
    assert not alice.allowed("clients/dev-2/temp", WRITE)
    assert alice.allowed("users/alice/inbox", READ)
    assert not alice.allowed("users/alice/inbox", WRITE)
    assert not alice.allowed("users/bob/inbox", READ)
    assert not alice.allowed("clients/dev-1/locked", WRITE)  # deny pattern first


def test_user_rules_come_before_deny_patterns() -> None:
    """Mosquitto checks the user's own rules completely before any pattern: a user rule that
    allows wins over a deny pattern."""
    text = "user carol\ntopic readwrite clients/+/locked\npattern deny clients/%c/locked\n"
    assert acl_for("k", "carol", text).allowed("clients/k/locked", WRITE)
    assert not acl_for("k", "dave", text).allowed("clients/k/locked", WRITE)


def test_wildcards_in_identity_disable_patterns() -> None:
    """A client id or username with + or # would widen a pattern: refused at the pattern step."""
    assert not acl_for("a/#", "alice").allowed("clients/a/x", WRITE)
    assert not acl_for("c1", "eve+").allowed("clients/c1/x", WRITE)
    assert acl_for("a/#", "alice").allowed("alice/x", WRITE)  # user rules still apply


def test_dollar_topics_only_through_dollar_rules() -> None:
    root = acl_for("r", "root", "user root\ntopic readwrite #\ntopic read +/x\n")
    assert root.allowed("a/b", READ)
    assert not root.allowed("$SYS/broker/uptime", READ)  # '#' does not match $SYS
    assert not root.allowed("$SYS/x", READ)
    alice = acl_for("a", "alice")
    assert alice.allowed("$SYS/broker/uptime", READ)
    assert not alice.allowed("$SYS/other", READ)


def test_no_matching_rule_and_unknown_user_are_refused() -> None:
    stranger = acl_for("s", "stranger")
    assert not stranger.allowed("anything", READ)
    assert not stranger.allowed("public/news", READ)
    assert not acl_for("s", None, "").allowed("x", READ)  # empty file: everything refused


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("topic read a\nuser\n", 2, "'user' needs a username"),
        ("\ntopic\n", 2, "'topic' needs a topic filter"),
        ("topic readonly a/b\n", 1, "invalid access 'readonly'"),
        ("topic read a/#/b\n", 1, "invalid topic filter 'a/#/b'"),
        ("pattern write a/%c+\n", 1, "invalid topic filter"),
        ("# ok\nusers alice\n", 2, "invalid line: expected 'topic', 'pattern', 'user'"),
    ],
)
def test_errors_name_file_and_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_acl(text, "/etc/midge/acl")
    assert str(info.value).startswith(f"/etc/midge/acl:{line}: ")
    assert message in str(info.value)


def test_a_lone_access_word_is_the_topic() -> None:
    """Mosquitto: with one word after 'topic' that word is the filter (readwrite)."""
    acl = parse_acl("topic read\n")
    assert [(r.filter, r.access) for r in acl.users[None]] == [("read", READ | WRITE)]


def test_pattern_without_substitution_is_noted() -> None:
    acl = parse_acl("pattern read fixed/topic\n", "acl")
    assert acl.notices == ["acl:1: ACL pattern 'fixed/topic' does not contain '%c' or '%u'"]
