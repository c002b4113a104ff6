"""The SSRF guard sees through IPv6 transition prefixes (issue 13): IPv4-compatible
`::/96` and SIIT `::ffff:0:0:0/96` are unwrapped and judged by their IPv4 address;
local-use NAT64 `64:ff9b:1::/48` and site-local `fec0::/10` are refused outright."""

from __future__ import annotations

import ipaddress

import pytest

from services.webhooks.address_guard import UrlRefused, address_allowed, resolve_url


@pytest.mark.parametrize(
    "address",
    [
        "::7f00:1",  # ::127.0.0.1, IPv4-compatible
        "::a9fe:a9fe",  # ::169.254.169.254 (cloud metadata)
        "::a00:1",  # ::10.0.0.1
        "::ffff:0:7f00:1",  # SIIT 127.0.0.1
        "::ffff:0:a9fe:a9fe",  # SIIT 169.254.169.254
        "64:ff9b:1::a9fe:a9fe",  # local-use NAT64
        "64:ff9b:1:ffff::808:808",  # local-use NAT64, even with a public IPv4 inside
        "fec0::1",  # site-local
        "feff::1",
    ],
)
def test_transition_forms_of_internal_addresses_are_refused(address: str) -> None:
    assert not address_allowed(ipaddress.ip_address(address), [])


def test_transition_forms_of_public_addresses_pass_and_allow_lists_still_apply() -> None:
    assert address_allowed(ipaddress.ip_address("::ffff:0:808:808"), [])
    assert address_allowed(ipaddress.ip_address("::808:808"), [])
    site_local = ipaddress.ip_network("fec0::/10")
    assert address_allowed(ipaddress.ip_address("fec0::1"), [site_local])


async def test_literal_urls_with_transition_addresses_are_refused() -> None:
    with pytest.raises(UrlRefused, match="non-public"):
        await resolve_url("https://[::a9fe:a9fe]/hook", allow_http=False, allowed=[])
