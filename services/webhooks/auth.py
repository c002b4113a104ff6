"""Who may call the webhooks service's routes: dependencies the module-level routers of
`api.py` and `events_api.py` declare (Polar's `checkout_link/auth.py` pattern). The principal
is verified with the app's settings at request time (`current_principal`)."""

from typing import Annotated

from fastapi import Depends

from libs.common.principal import Principal, current_principal, require_scope

# Endpoints, secrets, deliveries: the `manage_webhooks` scope.
Scoped = Annotated[Principal, Depends(require_scope("manage_webhooks", current_principal))]
# The event catalog, stream and triggers: any key; the service checks each type's read scope.
Caller = Annotated[Principal, Depends(current_principal)]
