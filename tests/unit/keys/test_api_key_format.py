"""The API key format (libs.common.apikeys): prefix, lookup id, checksum, masking."""

from __future__ import annotations

import pytest

from libs.common.apikeys import (
    ALPHABET,
    ApiKeyFormatError,
    generate_api_key,
    mask_api_key,
    parse_api_key,
)


@pytest.mark.parametrize("mode", ["live", "test"])
def test_generated_keys_parse_back(mode: str) -> None:
    key = generate_api_key(mode)  # type: ignore[arg-type]
    assert key.raw.startswith(f"pm_{mode}_") and len(key.raw) == 40
    assert set(key.raw[8:]) <= set(ALPHABET)
    parsed = parse_api_key(key.raw)
    assert (parsed.mode, parsed.lookup_id) == (mode, key.lookup_id)
    assert key.raw not in repr(parsed)


def test_every_single_character_typo_is_caught_by_the_checksum() -> None:
    key = generate_api_key("live").raw
    for i in range(8, 40):
        replacement = "A" if key[i] != "A" else "B"
        typo = key[:i] + replacement + key[i + 1 :]
        with pytest.raises(ApiKeyFormatError):
            parse_api_key(typo)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "pm_live_",
        "pm_prod_" + "A" * 32,
        "pk_live_" + "A" * 32,
        "pm_live_" + "A" * 31,
        "pm_live_" + "A" * 33,
        "pm_live_" + "A" * 31 + "!",
        "pm_live_" + "A" * 32,
    ],
)
def test_malformed_keys_are_rejected(bad: str) -> None:
    with pytest.raises(ApiKeyFormatError):
        parse_api_key(bad)


def test_live_and_test_prefixes_are_not_interchangeable() -> None:
    key = generate_api_key("live").raw
    with pytest.raises(ApiKeyFormatError):
        parse_api_key("pm_test_" + key[8:])


def test_mask_shows_only_lookup_id_and_last_four() -> None:
    key = generate_api_key("test")
    masked = mask_api_key("test", key.lookup_id, key.last4)
    assert masked == f"pm_test_{key.lookup_id}{'*' * 20}{key.raw[-4:]}"
    assert key.raw[16:36] not in masked
