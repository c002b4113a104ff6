"""`Timestamp`: a date-time parameter or body field exactly as the spec states it
(`format: date-time`, RFC 3339 §5.6: date, `T`, time with seconds, an offset).

Pydantic alone is lax: it takes `0` or `"1700000000"` as Unix time, `"2026-01-05"` as
midnight and a time without offset as naive, none of which the published spec allows; the
contract fuzz (issue 15 §5) sends them and expects 422. Naive or unparseable values are
refused here with a message that shows the expected form.

An offset can carry a valid date-time outside what Python holds in UTC (years 1 to 9999):
`0001-01-01T01:00:00+02:00` is still in year 0 in UTC. The spec admits it, so it is not
refused; it is clamped to the first (or last) representable instant, which selects the
same rows as a filter bound and is as far from any real instant as a stored value (such a
value was a 500 before: the contract fuzz's stateful phase sent one to webhook recovery)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

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


FIRST_INSTANT = datetime.min.replace(tzinfo=UTC)
LAST_INSTANT = datetime.max.replace(tzinfo=UTC)


def in_utc_range(value: datetime) -> datetime:
    try:
        value.astimezone(UTC)
    except OverflowError:
        return FIRST_INSTANT if value.year == datetime.min.year else LAST_INSTANT
    return value


Timestamp = Annotated[datetime, BeforeValidator(check_timestamp), AfterValidator(in_utc_range)]
