"""Delivery's private commands: work items it sends itself, never public facts.

`SendBatch` is the one way a message reaches a provider: the accept transaction writes one
per chunk of a send (a delayed chunk's scheduled for when it is due), a provider retry
writes one for when the retry is due, the sweeper writes one for claims it requeues. The
outbox relay publishes each to `delivery.send` (default exchange) once due; the worker's
handler claims and sends the listed messages that are still queued and due.
"""

from __future__ import annotations

from libs.common.commands import Command


class SendBatch(Command):
    """Send the listed messages that are still queued and due (idempotent by their state:
    a redelivered command finds nothing left to claim)."""

    command_type = "delivery.send_batch"
    queue = "delivery.send"
    message_ids: list[str]
    batch_id: str | None = None
