"""The option table and the model agree: every option sets a field that exists, with the same
default, and every model field is set by an option (or listed in model.NOT_OPTIONS)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from midge.bridge.options import BridgeConfig
from midge.config import Config, ListenerConfig
from midge.config.model import NOT_OPTIONS
from midge.config.options import (
    BRIDGE,
    GLOBAL,
    LISTENER,
    PER_LISTENER,
    UNSUPPORTED,
    Option,
    all_options,
    group_settings,
    groups,
    named,
)


def _defaults(cls: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def _models(opt: Option) -> list[tuple[type, dict[str, Any]]]:
    """The models ``opt`` sets a field of, with their defaults."""
    if opt.target:
        settings = group_settings(opt.target)
        return [(type(settings), _defaults(type(settings)))]
    if opt.scope == GLOBAL:
        return [(Config, _defaults(Config))]
    if opt.scope == PER_LISTENER:
        return [(Config, _defaults(Config)), (ListenerConfig, _defaults(ListenerConfig))]
    if opt.scope == BRIDGE:
        return [(BridgeConfig, _defaults(BridgeConfig))]
    assert opt.scope == LISTENER, opt.name
    models: list[tuple[type, dict[str, Any]]] = [(ListenerConfig, _defaults(ListenerConfig))]
    if opt.toml_global:
        models.append((Config, _defaults(Config)))
    return models


SUPPORTED = [o for o in all_options() if o.kind != UNSUPPORTED and o.attr is not None]


@pytest.mark.parametrize("opt", SUPPORTED, ids=lambda o: o.name)
def test_option_field_exists_with_the_tables_default(opt: Option) -> None:
    assert opt.attr is not None  # SUPPORTED: options with a field only
    for model, defaults in _models(opt):
        assert opt.attr in defaults, f"{opt.name}: {model.__name__} has no field {opt.attr!r}"
    model, defaults = _models(opt)[0]  # Config's, for an option that is also per listener
    if opt.alias_of is None:
        assert defaults[opt.attr] == opt.default, (
            f"{opt.name}: the table's default {opt.default!r} differs from "
            f"{model.__name__}.{opt.attr} = {defaults[opt.attr]!r}"
        )


@pytest.mark.parametrize("model", [Config, ListenerConfig, BridgeConfig], ids=lambda m: m.__name__)
def test_every_field_is_an_option(model: type) -> None:
    scopes = {
        Config: (GLOBAL, PER_LISTENER),
        ListenerConfig: (LISTENER, PER_LISTENER),
        BridgeConfig: (BRIDGE,),
    }[model]
    set_by_table = {o.attr for o in SUPPORTED if o.scope in scopes and not o.target}
    if model is Config:
        set_by_table |= {o.attr for o in SUPPORTED if o.toml_global}
        set_by_table |= {o.target for o in all_options() if o.target}
    fields = {f.name for f in dataclasses.fields(model)}
    assert fields - set_by_table == set(NOT_OPTIONS[model.__name__])


def test_backend_settings_fields_are_all_options() -> None:
    for group in groups():
        if group.settings is None:
            continue
        fields = {f.name for f in dataclasses.fields(group.settings())}
        assert fields == {o.attr for o in group.options if o.target == group.name}


def test_each_name_has_one_meaning_per_format() -> None:
    for opt in all_options():
        same = [o for o in named(opt.name) if o.kind != UNSUPPORTED]
        for fmt in ("conf", "toml"):
            # One meaning per scope: TOML's listener `address` and a bridge's are two keys.
            here = [o for o in same if fmt in o.formats and o.scope == opt.scope]
            assert len(here) <= 1, (opt.name, fmt)


def test_aliases_name_an_option() -> None:
    for opt in all_options():
        if opt.alias_of is not None:
            assert any(o.alias_of is None for o in named(opt.alias_of)), opt.name


def test_every_behaviour_is_implemented_by_the_readers_that_read_it() -> None:
    from midge.config.mosquitto import ConfParser
    from midge.config.toml import TomlReader

    # Behaviours a reader handles before its generic path (TOML's listener-table keys, the
    # refusals, the TOML top-level messages for conf-only options).
    handled_inline = {
        "conf": {"include_dir", "c_plugin_option"},
        "toml": {"port", "c_plugin_option", "include_dir", "bind_address", "python_opt"},
    }
    readers = {"conf": ConfParser, "toml": TomlReader}
    for opt in all_options():
        if opt.apply is None:
            continue
        for fmt in opt.formats:
            if opt.apply in handled_inline[fmt]:
                continue
            assert hasattr(readers[fmt], f"_apply_{opt.apply}"), (opt.name, fmt)
