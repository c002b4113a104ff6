"""`Timestamp`: a date-time parameter or body field exactly as the spec states it
(`format: date-time`, RFC 3339 §5.6: date, `T`, time with seconds, an offset).

Pydantic alone is lax: it takes `0` or `"1700000000"` as Unix time, `"2026-01-05"` as
midnight and a time without offset as naive, none of which the published spec allows; the
contract fuzz (issue 15 §5) sends them and expects 422. Naive or unparseable values are
refused here with a message that shows the expected form."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import BeforeValidator

RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
EXPECTED = "expected an RFC 3339 date-time with an offset, e.g. 2026-01-05T09:00:00Z"


def check_timestamp(value: Any) -> Any:
    if isinstance(value, datetime):  # built in code, not sent
        if value.tzinfo is None:
            raise ValueError(EXPECTED)
        return value
    if not isinstance(value, str) or not RFC3339.fullmatch(value):
        raise ValueError(EXPECTED)
    return value


Timestamp = Annotated[datetime, BeforeValidator(check_timestamp)]
