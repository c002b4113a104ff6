"""The signed per-message reply address (libs/common/reply_tokens.py)."""

from __future__ import annotations

from libs.common.reply_tokens import message_id_of_address, reply_address, reply_token

KEY = "test-reply-key-0123456789abcdef"
MID = "msg_0192f5a7c3d84e1b9a0b1c2d3e4f5a6b"


def test_an_address_round_trips_case_insensitively() -> None:
    address = reply_address(KEY, MID, "reply.example.com")
    assert address is not None and address.startswith("reply+")
    assert len(address.partition("@")[0]) <= 64  # RFC 5321 local-part limit
    assert message_id_of_address(KEY, address, ["reply.example.com"]) == MID
    assert message_id_of_address(KEY, address.upper(), ["reply.example.com"]) == MID


def test_forged_altered_or_foreign_tokens_do_not_verify() -> None:
    token = reply_token(KEY, MID)
    assert token is not None
    other = reply_token("another-key", MID)
    domains = ["reply.example.com"]
    assert message_id_of_address(KEY, f"reply+{other}@reply.example.com", domains) is None
    flipped = token[:-1] + ("a" if token[-1] != "a" else "b")
    assert message_id_of_address(KEY, f"reply+{flipped}@reply.example.com", domains) is None
    assert message_id_of_address(KEY, f"reply+{token}@elsewhere.example", domains) is None
    assert message_id_of_address(KEY, "reply+!!!@reply.example.com", domains) is None
    assert reply_token(KEY, "not-a-message-id") is None


def test_only_the_canonical_spelling_verifies() -> None:
    """26 bytes in base32 leave 2 unused bits in the last character: before the canonical
    check, 3 other last characters decoded to the same token and verified (an inbound test
    forging a token by its last character filed the reply in the inbox now and then)."""
    token = reply_token(KEY, MID)
    assert token is not None
    domains = ["reply.example.com"]
    for c in "abcdefghijklmnopqrstuvwxyz234567":
        if c == token[-1]:
            continue
        altered = f"reply+{token[:-1]}{c}@reply.example.com"
        assert message_id_of_address(KEY, altered, domains) is None, c
