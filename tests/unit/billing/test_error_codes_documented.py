"""Every error code the billing service registers is in docs/errors.md."""

import re
from pathlib import Path

import services.billing.service  # noqa: F401  (registers billing's codes)
from libs.common.http import ERROR_CODES

DOCS = Path(__file__).resolve().parents[3] / "docs" / "errors.md"


def test_billing_codes_are_documented() -> None:
    documented = set(re.findall(r"^\| `([a-z0-9_]+)` \| (\d{3}) \|", DOCS.read_text(), re.M))
    for code, (status, _) in ERROR_CODES.items():
        assert (code, str(status)) in documented, f"{code} ({status}) missing from docs/errors.md"
