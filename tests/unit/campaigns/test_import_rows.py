"""Parsing and checking of contact import rows (JSON and CSV) and of email addresses."""

from __future__ import annotations

import pytest

from libs.common.http import ApiError
from services.campaigns.schemas import check_email
from services.campaigns.service import (
    _import_row,
    parse_import_csv,
    parse_import_json,
    parse_period,
)


@pytest.mark.parametrize(
    "email",
    ["ada@example.com", "Ada.Lovelace+tag@sub.example.co.uk", "o'hara@x.io", "ü@exämple.de"],
)
def test_valid_emails(email: str) -> None:
    assert check_email(f"  {email} ")


@pytest.mark.parametrize(
    "email",
    [
        "",
        "plain",
        "a@b",
        "a@@b.com",
        "a b@c.com",
        "a@-x.com",
        "a@x.123",
        "x" * 65 + "@a.io",
        "a@" + "b" * 250 + ".com",
        42,
    ],
)
def test_invalid_emails(email: object) -> None:
    with pytest.raises(ValueError):
        check_email(email)


def test_csv_maps_known_columns_tags_and_custom_fields() -> None:
    body = (
        "\ufeffemail,first_name,tags,plan,status\n"
        "ada@x.io,Ada,vip; beta ;,pro,\n"
        "\n"
        "bob@x.io,,,,unsubscribed\n"
    ).encode()
    rows = parse_import_csv(body)
    assert rows[0] == {
        "email": "ada@x.io",
        "first_name": "Ada",
        "tags": ["vip", "beta"],
        "custom_fields": {"plan": "pro"},
    }
    assert rows[1] is None  # blank line keeps numbering and is reported
    assert rows[2] == {"email": "bob@x.io", "status": "unsubscribed"}


def test_csv_without_email_column_is_refused() -> None:
    with pytest.raises(ApiError) as info:
        parse_import_csv(b"name\nada\n")
    assert info.value.code == "validation_error"


def test_json_import_shapes() -> None:
    assert parse_import_json(b'[{"email": "a@x.io"}]') == [{"email": "a@x.io"}]
    assert parse_import_json(b'{"contacts": [{"email": "a@x.io"}]}') == [{"email": "a@x.io"}]
    with pytest.raises(ApiError) as info:
        parse_import_json(b'{"email": "a@x.io"}')
    assert info.value.code == "validation_error"
    with pytest.raises(ApiError) as info:
        parse_import_json(b"[{")
    assert info.value.code == "invalid_json"


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"email": "nope"}, "email"),
        ({"email": "a@x.io", "tags": "vip"}, "tags"),
        ({"email": "a@x.io", "custom_fields": []}, "custom_fields"),
        ({"email": "a@x.io", "status": "deleted"}, "status"),
        ({"email": "a@x.io", "first_name": "x" * 500}, "first_name"),
        ({"email": "a@x.io", "phone": "1"}, "phone"),
        ("a@x.io", None),
    ],
)
def test_bad_rows_name_the_field(item: object, field: str | None) -> None:
    row, got_field, message = _import_row(item)
    assert row is None and message
    assert got_field == field


def test_period() -> None:
    assert parse_period("7d") == 7
    for bad in ("0d", "91d", "7", "1w", "-1d"):
        with pytest.raises(ApiError):
            parse_period(bad)
