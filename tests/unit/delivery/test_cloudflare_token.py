"""A Cloudflare token stored before tokens were checked to be header-safe makes publishing a
clear `dns_provider_rejected`, not a 500 from the HTTP client (found by the contract fuzz).
No request leaves: the header cannot even be built."""

from __future__ import annotations

import pytest

from services.delivery.domains.cloudflare import CloudflarePublisher, DnsProviderRejected
from services.delivery.domains.records import RecordPolicy

POLICY = RecordPolicy("_spf.pm.test", "bounce", "bounce.pm.test", "t", "t.pm.test", "dmarc@pm")


async def test_a_token_no_header_can_carry_is_rejected_by_name() -> None:
    publisher = CloudflarePublisher("é" * 20, "http://127.0.0.1:9", 1.0)
    try:
        with pytest.raises(DnsProviderRejected, match="store it again"):
            await publisher.publish("mail.example.com", [], POLICY)
    finally:
        await publisher.close()
