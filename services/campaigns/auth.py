"""Who may call the campaigns service's routes: one scope alias per resource family, declared
by the module-level router of `api.py` (Polar's `checkout_link/auth.py` pattern). The
principal is verified with the app's settings at request time (`current_principal`)."""

from typing import Annotated

from fastapi import Depends

from libs.common.principal import Principal, current_principal, require_scope

contacts_scope = Annotated[Principal, Depends(require_scope("manage_contacts", current_principal))]
templates_scope = Annotated[
    Principal, Depends(require_scope("manage_templates", current_principal))
]
campaigns_scope = Annotated[
    Principal, Depends(require_scope("manage_campaigns", current_principal))
]
analytics_scope = Annotated[Principal, Depends(require_scope("read_analytics", current_principal))]
