"""The relay's publish frames, copied from one marshalled template per group, are byte for byte
what pamqp marshals for each publish (AMQP 0-9-1): content headers and body frames."""

from __future__ import annotations

import uuid

import pamqp.frame
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from libs.common.outbox import _body_frame, _HeaderFrames

HEADERS = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


def _pamqp_header(channel: int, routing_key: str, message_id: str, size: int) -> bytes:
    return pamqp.frame.marshal(
        ContentHeader(
            properties=spec.Basic.Properties(
                message_id=message_id,
                content_type="application/cloudevents+json",
                delivery_mode=2,
                headers=dict(HEADERS),
                message_type=routing_key,
            ),
            body_size=size,
        ),
        channel,
    )


def test_header_frames_match_pamqp_for_every_id_and_size() -> None:
    for channel, routing_key in ((1, "email.sent"), (7, "delivery.send")):
        frames = _HeaderFrames(channel, HEADERS, routing_key)
        ids = [str(uuid.uuid4()) for _ in range(3)] + ["short", "x" * 200, "ünïcode-id"]
        for message_id in ids:
            for size in (0, 1, 700, 2**32 + 5):
                expected = _pamqp_header(channel, routing_key, message_id, size)
                assert frames.frame(message_id, size) == expected, (message_id, size)


def test_body_frames_match_pamqp() -> None:
    for channel in (1, 300):
        for chunk in (b"", b"{}", bytes(range(256)) * 600):
            expected = pamqp.frame.marshal(ContentBody(chunk), channel)
            assert _body_frame(channel, chunk) == expected
