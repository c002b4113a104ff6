"""Who may call the keys service's routes: dependencies the module-level routers of `api.py`
declare (Polar's `checkout_link/auth.py` pattern). The principal is verified with the app's
settings at request time (`libs.common.principal.current_principal`)."""

from typing import Annotated

from fastapi import Depends

from libs.common.http import Forbidden
from libs.common.principal import Principal, current_principal

# Scope a service principal needs for the internal routes (only the gateway signs it).
INTERNAL_SCOPE = "internal:keys"


async def user(p: Annotated[Principal, Depends(current_principal)]) -> Principal:
    """A dashboard user's session (API keys cannot manage API keys)."""
    if p.subject_type != "user":
        raise Forbidden(
            "Managing API keys needs a dashboard user session.", code="user_session_required"
        )
    return p


async def internal(p: Annotated[Principal, Depends(current_principal)]) -> Principal:
    """The gateway's service principal with the internal scope."""
    if p.subject_type != "service" or not p.has_scope(INTERNAL_SCOPE):
        raise Forbidden("Internal route.", code="insufficient_scope")
    return p


User = Annotated[Principal, Depends(user)]
