"""Tests for odpmap.catalogue: the ODP event catalogue and its builder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from odpmap import hookimpl
from odpmap.catalogue import CHANNEL, Catalogue, CatalogueBuilder, EventSpec
from odpmap.engine import Engine
from odpmap.errors import ConfigError, SchemaDefinitionError
from odpmap.validation import EventSchema

TS = 1_700_000_000

BUILTIN_CHANNEL_TYPES = {
    "email", "sms", "app_push", "web_push", "web_modal", "web_embed", "api", "direct_mail", "whatsapp",
    "facebook_messenger", "ad", "segment_sync", "test_channel",
}
CHANNEL_ACTIONS = {"sent", "delivery", "delivery_unknown", "open", "click", "engage", "disengage", "soft_bounce"}


@pytest.fixture(scope="module")
def builtin() -> Catalogue:
    builder = CatalogueBuilder()
    builder.load_builtin()
    return builder.build()


def event(type_: str, action: str, **data: Any) -> dict[str, Any]:
    return {
        "type": type_,
        "action": action,
        "identifiers": {"email": "ada@example.com"},
        "data": {"ts": TS, "target_address": "ada@example.com", **data},
    }


# -- the built-in catalogue ------------------------------------------------------------


def test_builtin_channel_types(builtin: Catalogue) -> None:
    assert builtin.channel_types == frozenset(BUILTIN_CHANNEL_TYPES)
    assert builtin.version >= 1


def test_builtin_event_types(builtin: Catalogue) -> None:
    assert builtin.event_types() == BUILTIN_CHANNEL_TYPES | {"consent", "list", "reachability"}
    assert CHANNEL not in builtin.event_types()


@pytest.mark.parametrize("channel", sorted(BUILTIN_CHANNEL_TYPES))
def test_channel_entries_match_every_channel_type(channel: str, builtin: Catalogue) -> None:
    assert set(builtin.actions_for(channel, platform_generated=True)) == CHANNEL_ACTIONS
    # Actions ODP generates itself (sent) are listed only when asked for.
    assert set(builtin.actions_for(channel)) == CHANNEL_ACTIONS - {"sent"}
    for action in CHANNEL_ACTIONS:
        spec = builtin.lookup(channel, action)
        assert spec is not None and spec.type == CHANNEL and spec.action == action


def test_fixed_types_do_not_get_channel_actions(builtin: Catalogue) -> None:
    assert builtin.lookup("consent", "delivery") is None
    assert builtin.actions_for("consent") == ["opt-out"]
    assert builtin.actions_for("list") == ["unsubscribe"]
    assert builtin.actions_for("reachability") == ["unreachable"]


def test_unknown_type_has_no_actions(builtin: Catalogue) -> None:
    assert builtin.lookup("pigeon", "delivery") is None
    assert builtin.actions_for("pigeon") == []


def test_builtin_spec_details(builtin: Catalogue) -> None:
    sent = builtin.lookup("email", "sent")
    assert sent is not None and sent.platform_generated is True
    unsubscribe = builtin.lookup("list", "unsubscribe")
    assert unsubscribe is not None and unsubscribe.required == ("list_id",)
    unreachable = builtin.lookup("reachability", "unreachable")
    assert unreachable is not None
    assert unreachable.allowed == {"reachability_update_type": ("hard_bounce", "spam_report")}
    assert builtin.lookup("email", "delivery").attributable is True  # type: ignore[union-attr]
    assert builtin.lookup("email", "delivery_unknown").attributable is False  # type: ignore[union-attr]
    assert builtin.lookup("email", "click").category == "engagement"  # type: ignore[union-attr]


def test_builtin_identifiers(builtin: Catalogue) -> None:
    assert builtin.messaging_identifiers() == ["email", "phone"]
    assert builtin.identifier_allowed("vuid")
    assert builtin.identifier_allowed("crm_id")
    assert builtin.identifier_allowed("device_token")
    assert not builtin.identifier_allowed("nickname")
    assert "campaign_id" in builtin.campaign_tracking_fields
    assert builtin.fields["ts"] == {"type": "epoch_seconds", "required": True}


# -- the builder API -------------------------------------------------------------------


def test_empty_builder_builds_empty_catalogue() -> None:
    cat = CatalogueBuilder().build()
    assert cat.channel_types == frozenset()
    assert cat.events == ()
    assert cat.event_types() == set()


def test_add_channel_types_and_event() -> None:
    builder = CatalogueBuilder()
    builder.add_channel_types("email", "rcs", "email")
    builder.add_event(CHANNEL, ["delivery", "open"], category="delivery", attributable=["open"])
    builder.add_event("consent", ["opt-in"], category="consent")
    cat = builder.build()
    assert cat.channel_types == {"email", "rcs"}
    assert cat.event_types() == {"email", "rcs", "consent"}
    for channel in ("email", "rcs"):
        assert cat.actions_for(channel) == ["delivery", "open"]
    open_ = cat.lookup("rcs", "open")
    assert open_ == EventSpec(category="delivery", type=CHANNEL, action="open", attributable=True)
    assert cat.lookup("rcs", "delivery").attributable is False  # type: ignore[union-attr]
    assert cat.lookup("consent", "opt-in") is not None
    assert cat.lookup("rcs", "opt-in") is None


def test_add_event_with_requirements() -> None:
    builder = CatalogueBuilder()
    builder.add_event("loyalty", ["earn"], required=["points_key"], allowed={"tier": ["gold", "silver"]},
                      platform_generated=True)
    spec = builder.build().lookup("loyalty", "earn")
    assert spec is not None
    assert spec.required == ("points_key",)
    assert spec.allowed == {"tier": ("gold", "silver")}
    assert spec.platform_generated is True


def test_later_event_entry_replaces_earlier() -> None:
    builder = CatalogueBuilder()
    builder.add_event("list", ["unsubscribe"], required=["list_id"])
    builder.add_event("list", ["unsubscribe"], required=[])
    cat = builder.build()
    assert [e.action for e in cat.events] == ["unsubscribe"]
    assert cat.lookup("list", "unsubscribe").required == ()  # type: ignore[union-attr]


def test_add_identifier_and_field() -> None:
    builder = CatalogueBuilder()
    builder.add_identifier("fax", {"format": "e164", "messaging": True})
    builder.add_field("points", {"type": "integer"})
    cat = builder.build()
    assert cat.identifiers["fax"] == {"format": "e164", "messaging": True}
    assert cat.messaging_identifiers() == ["fax"]
    assert cat.fields["points"] == {"type": "integer"}


@pytest.mark.parametrize("type_", ["string", "integer", "number", "boolean", "epoch_seconds"])
def test_add_field_accepts_known_types(type_: str) -> None:
    builder = CatalogueBuilder()
    builder.add_field("f_" + type_, {"type": type_})
    assert builder.build().fields["f_" + type_]["type"] == type_


def test_add_field_without_type_defaults_to_string() -> None:
    builder = CatalogueBuilder()
    builder.add_field("note", {})
    assert builder.build().fields["note"] == {}


@pytest.mark.parametrize("type_", ["date", "int", "list", None], ids=["date", "int", "list", "none"])
def test_add_field_with_bad_type(type_: Any) -> None:
    builder = CatalogueBuilder()
    with pytest.raises(SchemaDefinitionError) as info:
        builder.add_field("when", {"type": type_})
    assert info.value.schema == "catalogue"
    assert "'when'" in str(info.value)
    assert "epoch_seconds" in str(info.value)
    assert isinstance(info.value, ConfigError)
    assert "when" not in builder.build().fields


def test_add_field_error_after_builtin_is_not_blamed_on_builtin_file() -> None:
    builder = CatalogueBuilder()
    builder.load_builtin()
    with pytest.raises(SchemaDefinitionError) as info:
        builder.add_field("when", {"type": "date"})
    assert info.value.source != "odpmap/schemas/catalogue.yaml"


def test_build_is_a_snapshot() -> None:
    builder = CatalogueBuilder()
    builder.add_channel_types("email")
    builder.add_identifier("vuid", {})
    first = builder.build()
    builder.add_channel_types("sms")
    builder.add_identifier("crm", {})
    builder.add_event(CHANNEL, ["open"])
    assert first.channel_types == {"email"}
    assert "crm" not in first.identifiers
    assert first.events == ()
    assert builder.build().channel_types == {"email", "sms"}


def test_two_builders_do_not_share_state() -> None:
    one, two = CatalogueBuilder(), CatalogueBuilder()
    one.add_channel_types("rcs")
    one.add_event("loyalty", ["earn"])
    one.add_identifier("fax", {})
    one.add_field("points", {"type": "integer"})
    one.load_text("custom_identifier_suffixes: [_ref]\ncampaign_tracking_fields: [promo]", source="one.yaml")
    cat = two.build()
    assert cat.channel_types == frozenset()
    assert cat.events == ()
    assert cat.identifiers == {} and cat.fields == {}
    assert cat.custom_identifier_suffixes == () and cat.campaign_tracking_fields == ()


def test_builtin_loaded_twice_is_not_duplicated() -> None:
    builder = CatalogueBuilder()
    builder.load_builtin()
    builder.load_builtin()
    cat = builder.build()
    assert len(cat.custom_identifier_suffixes) == len(set(cat.custom_identifier_suffixes))
    assert len({(e.type, e.action) for e in cat.events}) == len(cat.events)


# -- loading fragments -----------------------------------------------------------------


def test_load_text_fragment() -> None:
    builder = CatalogueBuilder()
    builder.load_builtin()
    builder.load_text(
        """
        version: 2
        channel_types: [rcs]
        events:
          - {category: loyalty, type: loyalty, actions: [earn, burn], required: [points_key]}
        identifiers:
          fax: {format: e164}
        custom_identifier_suffixes: [_ref]
        fields:
          points: {type: integer}
        campaign_tracking_fields: [promo]
        """,
        source="plugin.yaml",
    )
    cat = builder.build()
    assert cat.version == 2
    assert "rcs" in cat.channel_types
    assert cat.lookup("rcs", "click") is not None
    assert cat.lookup("loyalty", "burn").required == ("points_key",)  # type: ignore[union-attr]
    assert cat.identifier_allowed("order_ref")
    assert cat.fields["points"] == {"type": "integer"}
    assert "promo" in cat.campaign_tracking_fields


def test_load_from_file(tmp_path: Path) -> None:
    path = tmp_path / "fragment.yaml"
    path.write_text("channel_types: [rcs]\n", encoding="utf-8")
    builder = CatalogueBuilder()
    builder.load(path)
    assert builder.build().channel_types == {"rcs"}


def test_empty_fragment_is_fine() -> None:
    builder = CatalogueBuilder()
    builder.load_text("", source="empty.yaml")
    builder.load_text("# only a comment\n", source="comment.yaml")
    assert builder.build().events == ()


def test_version_never_goes_down() -> None:
    builder = CatalogueBuilder()
    builder.load_text("version: 3", source="a.yaml")
    builder.load_text("version: 2", source="b.yaml")
    assert builder.build().version == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus: 1\nchannel_types: [rcs]", "unknown keys ['bogus']"),
        ("- channel_types", "must be a mapping"),
        ("'just a string'", "must be a mapping"),
        ("42", "must be a mapping"),
        ("channel_types: [", "invalid YAML"),
        ("events:\n  - {type: x}", "events[0].actions: required field"),
        ("events:\n  - {actions: [a]}", "events[0].type: required field"),
        ("fields:\n  when: {type: date}", "field 'when'"),
    ],
    ids=["unknown-key", "list", "string", "number", "bad-yaml", "event-without-actions", "event-without-type",
         "bad-field-type"],
)
def test_load_text_errors_name_the_source(text: str, message: str) -> None:
    builder = CatalogueBuilder()
    with pytest.raises(SchemaDefinitionError) as info:
        builder.load_text(text, source="plugins/acme/catalogue.yaml")
    exc = info.value
    assert exc.source == "plugins/acme/catalogue.yaml"
    assert exc.schema == "catalogue"
    assert str(exc).startswith("plugins/acme/catalogue.yaml: ")
    assert message in str(exc)


def test_unknown_keys_are_rejected_before_anything_is_added() -> None:
    builder = CatalogueBuilder()
    with pytest.raises(SchemaDefinitionError):
        builder.load_text("bogus: 1\nchannel_types: [rcs]", source="x.yaml")
    assert builder.build().channel_types == frozenset()


@pytest.mark.parametrize(
    "text",
    ["channel_types: rcs", "events:\n  - {type: loyalty, actions: earn}", "custom_identifier_suffixes: _ref"],
    ids=["channel-types-string", "actions-string", "suffixes-string"],
)
def test_load_text_rejects_string_where_list_expected(text: str) -> None:
    with pytest.raises(SchemaDefinitionError):
        CatalogueBuilder().load_text(text, source="x.yaml")


@pytest.mark.parametrize(
    "text",
    [
        "events: [loyalty]",
        "events:\n  - {type: loyalty, actions: [earn], bogus: 1}",
        "identifiers: [fax]",
        "fields: [points]",
        "version: two",
    ],
    ids=["event-not-mapping", "event-unknown-key", "identifiers-list", "fields-list", "version-not-int"],
)
def test_load_text_malformed_entries_name_the_source(text: str) -> None:
    with pytest.raises(SchemaDefinitionError) as info:
        CatalogueBuilder().load_text(text, source="x.yaml")
    assert info.value.source == "x.yaml"


# -- catalogue additions reach validation ---------------------------------------------


def test_added_channel_type_validates() -> None:
    builder = CatalogueBuilder()
    builder.load_builtin()
    before = EventSchema(builder.build())
    builder.add_channel_types("rcs")
    after = EventSchema(builder.build())
    assert ("type", "allowed") in {(p, r) for p, r, _ in before.errors(event("rcs", "delivery"))}
    assert after.errors(event("rcs", "delivery")) == []
    assert after.errors(event("rcs", "soft_bounce")) == []
    assert {(p, r) for p, r, _ in after.errors(event("rcs", "opt-out"))} == {("action", "odp_event")}


def test_added_event_requirements_are_enforced() -> None:
    builder = CatalogueBuilder()
    builder.load_builtin()
    builder.add_event("loyalty", ["earn"], required=["points_key"], allowed={"tier": ["gold"]})
    schema = EventSchema(builder.build())
    assert schema.errors(event("loyalty", "earn", points_key="p1", tier="gold")) == []
    messages = [m for _, _, m in schema.errors(event("loyalty", "earn", tier="bronze"))]
    assert "loyalty/earn requires data.points_key" in messages
    assert any("data.tier must be one of ['gold']" in m for m in messages)


def test_added_identifier_and_field_are_enforced() -> None:
    builder = CatalogueBuilder()
    builder.load_builtin()
    builder.add_identifier("fax", {"format": "e164"})
    builder.add_field("points", {"type": "integer"})
    schema = EventSchema(builder.build())
    ok = event("email", "delivery", points=5)
    ok["identifiers"]["fax"] = "+14155238886"
    assert schema.errors(ok) == []
    bad = event("email", "delivery", points="5")
    bad["identifiers"]["fax"] = "0123"
    assert {(p, r) for p, r, _ in schema.errors(bad)} == {("identifiers.fax", "e164"), ("data.points", "type")}


class RcsPlugin:
    """A plugin that adds a channel type through the odpmap_extend_catalogue hook."""

    @hookimpl
    def odpmap_extend_catalogue(self, catalogue: CatalogueBuilder) -> None:
        catalogue.add_channel_types("rcs")


def test_plugin_added_channel_type_validates_in_its_engine_only() -> None:
    with_plugin = Engine(autoload=False, plugins=[RcsPlugin()])
    without_plugin = Engine(autoload=False)
    assert "rcs" in with_plugin.catalogue.channel_types
    with_plugin.schema.validate(event("rcs", "delivery"))
    assert "rcs" not in without_plugin.catalogue.channel_types
    assert without_plugin.schema.errors(event("rcs", "delivery"))
