"""Who may call the delivery service's routes: one scope alias per family, declared by the
module-level routers of `api.py` and `domains/api.py` (Polar's `checkout_link/auth.py`
pattern). The principal is verified with the app's settings at request time
(`current_principal`). The edges (tracking, unsubscribe, ESP webhooks) verify their own
signatures instead."""

from typing import Annotated

from fastapi import Depends

from libs.common.principal import Principal, current_principal, require_scope

Sender = Annotated[Principal, Depends(require_scope("send_email", current_principal))]
Reader = Annotated[Principal, Depends(require_scope("read_analytics", current_principal))]
Manager = Annotated[Principal, Depends(require_scope("manage_domains", current_principal))]
