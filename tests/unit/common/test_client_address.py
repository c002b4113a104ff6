"""Client addresses for throttling: IPv6 by /64, X-Forwarded-For by trusted hops."""

from __future__ import annotations

import pytest

from libs.common.client_address import address_bucket, forwarded_client


@pytest.mark.parametrize(
    ("address", "bucket"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:a:b:c:d", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("::ffff:198.51.100.4", "198.51.100.4"),
        ("unknown", "unknown"),
    ],
)
def test_address_bucket(address: str, bucket: str) -> None:
    assert address_bucket(address) == bucket


def test_two_addresses_of_one_ipv6_host_share_a_bucket() -> None:
    assert address_bucket("2001:db8::1") == address_bucket("2001:db8::ffff:1234")
    assert address_bucket("2001:db8::1") != address_bucket("2001:db8:0:1::1")


@pytest.mark.parametrize(
    ("header", "hops", "client"),
    [
        (None, 1, "10.0.0.9"),
        ("198.51.100.4", 0, "10.0.0.9"),  # no trusted proxy: the header is the caller's word
        ("198.51.100.4", 1, "198.51.100.4"),
        # The caller forged a leftmost entry; our one proxy appended the real address.
        ("1.2.3.4, 198.51.100.4", 1, "198.51.100.4"),
        ("1.2.3.4, 198.51.100.4, 10.1.0.2", 2, "198.51.100.4"),
        ("198.51.100.4", 2, "10.0.0.9"),  # fewer entries than trusted hops: the peer
        ("1.2.3.4, not-an-ip", 1, "10.0.0.9"),
    ],
)
def test_forwarded_client_trusts_hops_from_the_right(
    header: str | None, hops: int, client: str
) -> None:
    assert forwarded_client(header, "10.0.0.9", hops) == client
