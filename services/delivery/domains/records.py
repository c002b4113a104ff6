"""The DNS records a sending domain publishes, and whether what DNS answers matches them.

Pure functions: no I/O. `expected_records` says what to publish; `check_record` compares
one record with the answers a resolver gave for its host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import idna

Purpose = Literal["dkim", "dkim_next", "spf", "dmarc", "return_path", "tracking"]
RecordStatus = Literal["pending", "verified", "failed"]

# A domain is verified when these records are; the others are recommended and reported.
REQUIRED: frozenset[str] = frozenset({"dkim", "spf"})

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class InvalidDomainName(ValueError):
    """Not a registrable DNS name a mail domain can have."""


def normalize_domain(raw: str) -> str:
    """The ASCII (punycode) form of a domain name, lower-cased, without a trailing dot.

    IDN names are accepted in Unicode or punycode (UTS 46 mapping, IDNA 2008)."""
    name = raw.strip().rstrip(".").lower()
    if not name or len(name) > 253:
        raise InvalidDomainName("a domain name has 1 to 253 characters")
    try:
        ascii_name = idna.encode(name, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise InvalidDomainName(f"not a valid domain name: {exc}") from None
    labels = ascii_name.split(".")
    if len(labels) < 2:
        raise InvalidDomainName("a sending domain has at least two labels (example.com)")
    if not all(_LABEL.match(label) for label in labels):
        raise InvalidDomainName("each label has 1 to 63 letters, digits or hyphens")
    if labels[-1].isdigit():
        raise InvalidDomainName("the top-level label cannot be numeric (an IP address?)")
    return ascii_name


def unicode_domain(ascii_name: str) -> str:
    try:
        return idna.decode(ascii_name)
    except idna.IDNAError:
        return ascii_name


@dataclass(frozen=True)
class RecordPolicy:
    """What the platform asks every domain to publish (settings, shared by all tenants)."""

    spf_include: str
    return_path_host: str
    return_path_target: str
    tracking_host: str
    tracking_target: str
    dmarc_rua_mailbox: str


@dataclass(frozen=True)
class Record:
    purpose: Purpose
    type: Literal["TXT", "CNAME"]
    host: str
    value: str
    required: bool


def dkim_host(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"


def dkim_value(public_key_b64: str) -> str:
    return f"v=DKIM1; k=rsa; p={public_key_b64}"


def expected_records(
    domain: str,
    policy: RecordPolicy,
    dkim: tuple[str, str],
    dkim_next: tuple[str, str] | None = None,
) -> list[Record]:
    """The records to publish. `dkim` / `dkim_next` are (selector, base64 public key)."""
    records = [
        Record("dkim", "TXT", dkim_host(dkim[0], domain), dkim_value(dkim[1]), True),
        Record("spf", "TXT", domain, f"v=spf1 include:{policy.spf_include} ~all", True),
        Record(
            "dmarc",
            "TXT",
            f"_dmarc.{domain}",
            f"v=DMARC1; p=none; rua=mailto:{policy.dmarc_rua_mailbox}@{domain}",
            False,
        ),
        Record(
            "return_path",
            "CNAME",
            f"{policy.return_path_host}.{domain}",
            policy.return_path_target,
            False,
        ),
        Record(
            "tracking", "CNAME", f"{policy.tracking_host}.{domain}", policy.tracking_target, False
        ),
    ]
    if dkim_next is not None:
        host = dkim_host(dkim_next[0], domain)
        records.insert(1, Record("dkim_next", "TXT", host, dkim_value(dkim_next[1]), False))
    return records


def _tags(txt: str) -> dict[str, str]:
    tags = {}
    for part in txt.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags[key.strip().lower()] = "".join(value.split())
    return tags


def _same_host(a: str, b: str) -> bool:
    return a.rstrip(".").lower() == b.rstrip(".").lower()


def check_record(record: Record, answers: list[str], policy: RecordPolicy) -> bool:
    """Whether DNS answers (TXT strings joined, or CNAME targets) satisfy `record`.

    DKIM: a `v=DKIM1` TXT whose `p=` is our public key. SPF: the one `v=spf1` TXT includes
    ours (other mechanisms are the customer's business; two SPF records are an error by
    RFC 7208 §4.5). DMARC: a `v=DMARC1` TXT with any policy. CNAMEs: the exact target."""
    if record.type == "CNAME":
        return any(_same_host(a, record.value) for a in answers)
    if record.purpose in ("dkim", "dkim_next"):
        want = _tags(record.value)["p"]
        return any(
            _tags(a).get("v", "DKIM1") == "DKIM1" and _tags(a).get("p") == want for a in answers
        )
    if record.purpose == "spf":
        spf = [a for a in answers if a.lower().startswith("v=spf1")]
        return len(spf) == 1 and f"include:{policy.spf_include}".lower() in spf[0].lower().split()
    if record.purpose == "dmarc":
        return any(a.replace(" ", "").upper().startswith("V=DMARC1") for a in answers)
    return False


def sender_domain(address: str) -> str:
    """The normalized domain of an email address (its part after the last @)."""
    return normalize_domain(address.rpartition("@")[2])
