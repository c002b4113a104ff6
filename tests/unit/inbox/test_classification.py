"""Classification and threading headers of inbound mail, parsed from raw MIME."""

from __future__ import annotations

import pytest

from services.inbox.classification import classify
from services.inbox.mime import MalformedMail, parse_mail
from tests.unit.inbox import mail

OURS = "<msg_0192f5a7c3d84e1b0000000000000001@acme.example.com>"


def test_a_plain_reply_is_human_and_names_what_it_answers() -> None:
    parsed = parse_mail(mail.reply(in_reply_to=OURS, references=f"<a@b> {OURS}"))
    assert classify(parsed).classification == "human_reply"
    assert parsed.thread_ids[0] == OURS
    assert parsed.from_email == "prospect@example.org"
    assert parsed.text is not None and "Tuesday" in parsed.text


@pytest.mark.parametrize(
    "headers",
    [
        {"Auto-Submitted": "auto-replied"},
        {"Auto-Submitted": "auto-generated"},
        {"X-Autoreply": "yes"},
        {"Precedence": "auto_reply"},
    ],
)
def test_rfc3834_and_vendor_headers_mark_auto_replies(headers: dict[str, str]) -> None:
    assert classify(parse_mail(mail.reply(headers=headers))).classification == "auto_reply"


@pytest.mark.parametrize(
    "subject",
    ["Out of Office: Quick question", "Automatic reply: Quick question", "Abwesenheitsnotiz"],
)
def test_out_of_office_subjects_are_auto_replies(subject: str) -> None:
    assert classify(parse_mail(mail.reply(subject=subject))).classification == "auto_reply"


def test_auto_submitted_no_is_a_human_reply() -> None:
    parsed = parse_mail(mail.reply(headers={"Auto-Submitted": "no"}))
    assert classify(parsed).classification == "human_reply"


def test_a_dsn_is_a_hard_bounce_naming_the_original_message() -> None:
    parsed = parse_mail(mail.dsn(OURS, "gone@example.org"))
    verdict = classify(parsed)
    assert verdict.classification == "bounce"
    assert verdict.bounce_type == "hard"
    assert verdict.bounced_recipient == "gone@example.org"
    assert OURS in parsed.thread_ids


def test_a_4xx_dsn_is_a_soft_bounce() -> None:
    verdict = classify(parse_mail(mail.dsn(OURS, "full@example.org", status="4.2.2")))
    assert (verdict.classification, verdict.bounce_type) == ("bounce", "soft")


@pytest.mark.parametrize(
    ("subject", "text", "expected"),
    [
        ("Re: Quick question", "Unsubscribe\n\n> old", "unsubscribe_request"),
        ("Re: Quick question", "Please remove me from your list", "unsubscribe_request"),
        ("unsubscribe", "", "unsubscribe_request"),
        ("Re: Stop by next week?", "Sure, Tuesday works.", "human_reply"),
        ("Re: Quick question", "Stop by our booth!", "human_reply"),
    ],
)
def test_unsubscribe_requests(subject: str, text: str, expected: str) -> None:
    parsed = parse_mail(mail.reply(subject=subject, text=text))
    assert classify(parsed).classification == expected


def test_html_is_sanitized_and_attachments_are_metadata() -> None:
    parsed = parse_mail(
        mail.reply(
            html='<p onclick="x()">Hi<script>alert(1)</script><a href="https://x.test">x</a></p>',
            attachment=b"%PDF-1.4 fake",
        )
    )
    assert parsed.html is not None
    assert "script" not in parsed.html and "onclick" not in parsed.html
    assert 'rel="noopener noreferrer nofollow"' in parsed.html
    assert [(a.filename, a.content_type, a.size) for a in parsed.attachments] == [
        ("deck.pdf", "application/pdf", 13)
    ]


@pytest.mark.parametrize("raw", [b"", b"   \r\n", b"\x00\x01\x02 not mail at all"])
def test_garbage_is_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedMail):
        parse_mail(raw)
