"""Sender display names: control characters refused on input, addresses built with
`formataddr` (issue 13)."""

from __future__ import annotations

import pytest

from libs.common.emails import check_display_name, format_address


@pytest.mark.parametrize("name", ["Ada\r\nBcc: x@y.io", "Ada\nB", "A\x00", "A\x7f", "A\u2028B"])
def test_control_characters_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="control characters"):
        check_display_name(name)


def test_ordinary_names_pass() -> None:
    for name in (None, "Ada Lovelace", "Zoë, Ltd.", 'The "Penguins"'):
        assert check_display_name(name) == name


def test_format_address_quotes_encodes_and_flattens() -> None:
    assert format_address("Ada, Inc.", "a@x.io") == '"Ada, Inc." <a@x.io>'
    assert format_address("Ada\r\nBcc: e@x.io", "a@x.io") == '"Ada Bcc: e@x.io" <a@x.io>'
    encoded = format_address("Zoë", "a@x.io")
    assert encoded.isascii() and encoded.startswith("=?utf-8?") and encoded.endswith(" <a@x.io>")
