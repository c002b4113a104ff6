"""The public OpenAPI document the gateway serves at `/api/openapi.json`.

The gateway does not assemble it at run time: the services' schemas are merged offline by
`python -m scripts.docs` into the committed `docs/openapi.yaml` (a test keeps it in sync with
the code), and this module loads that file once. So the reference never depends on every
service being up, never changes between replicas of one release, and costs nothing per
request. `PM_OPENAPI_PATH` points elsewhere (e.g. a path baked into an image).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import yaml

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"


def spec_path() -> Path:
    return Path(os.environ.get("PM_OPENAPI_PATH") or DEFAULT_PATH)


@functools.cache
def spec_json(path: Path | None = None) -> bytes:
    """The document as compact JSON bytes, parsed once per process (and path)."""
    with (path or spec_path()).open() as fh:
        document = yaml.safe_load(fh)
    return json.dumps(document, separators=(",", ":")).encode()
