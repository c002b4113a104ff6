"""Every error code the keys service and the gateway register is in docs/errors.md."""

import importlib
import re
from pathlib import Path

from libs.common.http import ERROR_CODES

DOCS = Path(__file__).resolve().parents[3] / "docs" / "errors.md"


def test_keys_and_gateway_codes_are_documented() -> None:
    # Importing the services registers their codes.
    importlib.import_module("services.gateway.pipeline")
    importlib.import_module("services.keys.service")
    documented = set(re.findall(r"^\| `([a-z0-9_]+)` \| (\d{3}) \|", DOCS.read_text(), re.M))
    for code, (status, _) in ERROR_CODES.items():
        assert (code, str(status)) in documented, f"{code} ({status}) missing from docs/errors.md"
