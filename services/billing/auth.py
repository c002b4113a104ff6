"""Who may call the billing service's routes: the dependency the module-level router of
`api.py` declares (Polar's `checkout_link/auth.py` pattern). `POST /hooks/stripe` has no
principal: its `Stripe-Signature` is verified instead."""

from typing import Annotated

from fastapi import Depends

from libs.common.http import Forbidden
from libs.common.principal import Principal, current_principal


async def dashboard_user(p: Annotated[Principal, Depends(current_principal)]) -> Principal:
    # The gateway admits only owners' access tokens here; an API key never manages billing.
    if p.subject_type != "user":
        raise Forbidden("Billing is managed from the dashboard with a user access token.")
    return p


Owner = Annotated[Principal, Depends(dashboard_user)]
