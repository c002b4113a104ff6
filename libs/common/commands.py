"""Commands: work items a service sends itself, apart from the public event catalog.

An event (`libs.common.events`) is a fact any service may subscribe to; a command is an
instruction with exactly one handler, private to the service that sends it (cosmicpython's
`domain/commands.py` beside `domain/events.py`). A command travels in the same envelope
shape as an event, through the same transactional outbox, but to the service's own queue
through the service's own direct exchange `<service>.direct` (never `pm.events`, never the
default exchange, which no service user may write to, never the AsyncAPI document, never a
customer webhook), and may be scheduled for later (`outbox.enqueue_commands(..., not_before)`).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from libs.common.events import Envelope


class Command(BaseModel):
    """Base of a command's data. Subclasses set `command_type` and `queue` (the queue of
    its one handler, `<service>.<purpose>`, which `EventBus.handle_command` declares)."""

    model_config = ConfigDict(frozen=True)
    command_type: ClassVar[str]
    queue: ClassVar[str]


def direct_exchange(queue: str) -> str:
    """The direct exchange of the service that owns `queue` (`<service>.<purpose>...`): its
    commands, retries and dead letters reach its queues through it (routing key = the
    queue's name), never through the default exchange (libs/common/amqp_users.py)."""
    return f"{queue.split('.', 1)[0]}.direct"


def make_command(
    data: Command,
    *,
    tenant_id: str,
    source: str,
    subject: str | None = None,
    mode: Literal["live", "test"] = "live",
) -> Envelope:
    return Envelope(
        type=data.command_type,
        source=source,
        subject=subject,
        tenant_id=tenant_id,
        mode=mode,
        data=data.model_dump(mode="json"),
    )
