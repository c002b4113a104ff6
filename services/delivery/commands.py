"""Delivery's private commands: work items it sends itself, never public facts.

`SendBatch` is the one way a message reaches a provider: the accept transaction writes one
per chunk of a send (a delayed chunk's scheduled for when it is due), a provider retry
writes one for when the retry is due, the sweeper writes one for claims it requeues. The
outbox relay publishes each to `delivery.send` (through `delivery.direct`) once due; the
worker's handler claims and sends the listed messages that are still queued and due.

`SendExpress` is the express lane (issue 13, fair claiming): a send of a few messages
(`express_max_messages`, N) due now, from a tenant with fewer than N others queued or in
flight, gets this command on its own queue `delivery.express` instead of a `SendBatch`. It
is never queued behind another tenant's bulk commands, and its handler claims with a slot of
its own only tenants with fewer than N in flight (a bulk sender never takes the lane); what
it leaves is handed over as a `SendBatch`.
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


class SendExpress(SendBatch):
    """Send a small send of a tenant with little else waiting in the express lane (its
    leftovers are handed over as a `SendBatch`)."""

    command_type = "delivery.send_express"
    queue = "delivery.express"
