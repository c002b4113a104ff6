"""The services' self-descriptions, collected once per session (one subprocess each)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from scripts.docs.collect import REPO, collect_all


@pytest.fixture(scope="session")
def collected() -> dict[str, dict[str, Any]]:
    return collect_all()


@pytest.fixture(scope="session")
def committed_spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((REPO / "docs" / "openapi.yaml").read_text())
    return spec
