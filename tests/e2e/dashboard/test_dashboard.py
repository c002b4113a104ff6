"""The dashboard in a real browser (Debian's chromium through Playwright) against a real
stack: keys, webhooks and billing behind a gateway that serves the built app.

Controls are found by role and accessible name, as assistive technology finds them.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from standardwebhooks import Webhook

from tests.e2e.dashboard.conftest import ARTIFACTS, AXE, DashboardStack
from tests.fakes.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PASSWORD = "correct horse battery staple"
WIDTHS = (375, 768, 1280)
XSS = '<img src=x onerror="window.__xss=1">'


def eventually(check: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def page(browser: Any, stack: DashboardStack) -> Iterator[Any]:
    context = browser.new_context(accept_downloads=True, base_url=stack.url)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.url)
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    csp_errors: list[str] = []
    pg.on(
        "console",
        lambda m: csp_errors.append(m.text) if "Content Security Policy" in m.text else None,
    )
    pg.csp_errors = csp_errors
    try:
        yield pg
    finally:
        context.close()
    assert not csp_errors, csp_errors


def sign_up(page: Any) -> str:
    from playwright.sync_api import expect

    email = f"dash-{uuid.uuid4().hex[:10]}@example.com"
    page.goto("/dashboard/signup")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Company").fill(f"Dash {email}")
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", name="API keys", exact=True)).to_be_visible()
    return email


def create_key(page: Any, name: str, scopes: list[str], mode: str = "Live") -> str:
    dialog = page.get_by_role("dialog", name="Create API key")
    dialog.get_by_label("Name").fill(name)
    dialog.get_by_label(mode, exact=False).check()
    for scope in scopes:
        dialog.get_by_label(scope, exact=True).check()
    dialog.get_by_role("button", name="Create key").click()
    shown = page.get_by_role("dialog", name="Your new API key")
    key: str = shown.get_by_label("New API key").inner_text()
    return key


def close_key_dialog(page: Any) -> None:
    from playwright.sync_api import expect

    shown = page.get_by_role("dialog", name="Your new API key")
    shown.get_by_role("button", name="Done").click()
    expect(shown.get_by_text("Have you stored the key?")).to_be_visible()
    shown.get_by_role("button", name="Yes, I stored it").click()
    expect(shown).to_be_hidden()


def status_of(stack: DashboardStack, key: str) -> int:
    return httpx.get(
        f"{stack.url}/api/v1/webhooks", headers={"Authorization": f"Bearer {key}"}
    ).status_code


def run_axe(page: Any) -> list[dict[str, Any]]:
    # Evaluated through the DevTools protocol: the page's CSP (no inline script) stays on.
    page.evaluate(AXE.read_text() + "\n;0")
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def screenshots(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(150)
        page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


# ---------------------------------------------------------------- API keys


def test_api_key_lifecycle(page: Any, stack: DashboardStack) -> None:
    from playwright.sync_api import expect

    sign_up(page)
    # Nothing of the session is in web storage; the refresh token is an HttpOnly cookie.
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0
    cookies = {c["name"]: c for c in page.context.cookies()}
    refresh = cookies["pm_refresh"]
    assert refresh["httpOnly"] and refresh["secure"] and refresh["sameSite"] == "Strict"
    assert refresh["path"] == "/api/v1/auth"
    assert page.evaluate("document.cookie") == ""

    page.get_by_role("button", name="Create your first API key").click()
    key = create_key(page, "ci key", ["read_analytics", "manage_webhooks"])
    assert key.startswith("pm_live_")

    # Shown once: copied, downloaded as .env, filled into the examples.
    shown = page.get_by_role("dialog", name="Your new API key")
    shown.get_by_role("button", name="Copy key").click()
    expect(shown.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == key
    with page.expect_download() as download:
        shown.get_by_role("link", name="Download .env").click()
    # Chromium drops a leading dot from download names, so the file is `<name>.env`.
    assert download.value.suggested_filename.endswith(".env")
    assert Path(download.value.path()).read_text() == f"PENGUINMAILS_API_KEY={key}\n"
    for tab in ("cURL", "Node.js", "Python"):
        shown.get_by_role("tab", name=tab).click()
        expect(shown.get_by_role("tabpanel")).to_contain_text(key)
    close_key_dialog(page)

    # The key works through the gateway (three calls for the usage chart).
    for _ in range(3):
        assert status_of(stack, key) == 200

    # The list shows it masked, never whole.
    row = page.get_by_role("row", name=re.compile("ci key"))
    expect(row).to_contain_text(key[-4:])
    expect(row).to_contain_text("read_analytics, manage_webhooks")
    assert key not in page.content()

    # Usage: the chart's data (and the totals) show the three calls once flushed.
    def usage_shows_calls() -> bool:
        page.get_by_role("button", name="Details of ci key").click()
        details = page.get_by_role("dialog", name="Key: ci key")
        chart = details.get_by_role("img", name=re.compile("Requests and errors"))
        expect(chart).to_be_visible()
        expect(details.get_by_role("img", name=re.compile("Error rate"))).to_be_visible()
        total = details.get_by_test_id("total-requests").inner_text()
        rate = details.get_by_test_id("error-rate").inner_text()
        label = chart.get_attribute("aria-label") or ""
        details.get_by_role("button", name="Close").click()
        return total == "3" and "Requests total 3" in label and rate == "0%"

    eventually(usage_shows_calls, what="usage totals of 3 calls")

    # Regenerate (no grace): a new key, shown once; the old one stops.
    page.get_by_role("button", name="Regenerate ci key").click()
    regen = page.get_by_role("dialog", name="Regenerate ci key?")
    expect(regen).to_contain_text("Security warning")
    regen.get_by_label("Grace period for the old key").select_option(label="Stop the old key now")
    regen.get_by_role("button", name="Regenerate key").click()
    new_key = page.get_by_role("dialog", name="Your new API key").get_by_label("New API key")
    new = new_key.inner_text()
    assert new != key and new.startswith("pm_live_")
    close_key_dialog(page)
    eventually(lambda: status_of(stack, key) == 401, what="the replaced key refused")
    assert status_of(stack, new) == 200

    # Revoke with confirmation: the key gets 401.
    page.get_by_role("button", name="Revoke ci key").click()
    page.get_by_role("dialog", name="Revoke ci key?").get_by_role(
        "button", name="Revoke key"
    ).click()
    expect(page.get_by_role("row", name=re.compile("ci key"))).to_contain_text("revoked")
    eventually(lambda: status_of(stack, new) == 401, what="the revoked key refused")


# ---------------------------------------------------------------- webhooks


def test_webhook_endpoint_lifecycle(
    page: Any, stack: DashboardStack, receiver: WebhookReceiver
) -> None:
    from playwright.sync_api import expect

    sign_up(page)
    page.get_by_role("navigation", name="Settings").get_by_role("link", name="Webhooks").click()
    expect(page.get_by_role("heading", name="Webhooks", level=1)).to_be_visible()
    page.get_by_role("button", name="Add endpoint").click()
    dialog = page.get_by_role("dialog", name="Add endpoint")
    dialog.get_by_label("Endpoint URL").fill(receiver.url)
    dialog.get_by_label("email.opened", exact=True).check()
    dialog.get_by_label("email.delivered", exact=True).check()
    dialog.get_by_role("button", name="Add endpoint").click()

    added = page.get_by_role("dialog", name="Endpoint added")
    secret = added.get_by_label("Signing secret").inner_text()
    assert secret.startswith("whsec_")
    added.get_by_role("button", name="Done").click()
    row = page.get_by_role("row", name=receiver.url)
    expect(row).to_contain_text("email.delivered, email.opened")
    expect(row).to_contain_text("healthy")

    # Test panel: the payload preview, then "Send test".
    page.get_by_role("button", name=f"Test and log {receiver.url}").click()
    page.get_by_label("Event type").first.select_option("email.opened")
    expect(page.get_by_label("Sample payload preview")).to_contain_text('"type": "email.opened"')
    page.get_by_role("button", name="Send test").click()
    expect(page.get_by_role("status").filter(has_text="Test delivered")).to_contain_text("HTTP 200")

    # The receiver got one signed request that verifies with the shown secret.
    got = receiver.wait_for(1)[0]
    event = Webhook(secret).verify(got.body, got.headers)
    assert event["type"] == "email.opened"

    # The log shows it with status, code and response time.
    log_row = page.get_by_role("region", name="Deliveries").get_by_role("row").nth(1)
    expect(log_row).to_contain_text("email.opened (test)")
    expect(log_row).to_contain_text("succeeded")
    expect(log_row).to_contain_text("200")
    expect(log_row).to_contain_text(re.compile(r"\d+ ms"))

    # Disable: a retry of the delivery is refused in words, and nothing reaches the receiver.
    page.get_by_role("link", name="← All endpoints").click()
    page.get_by_role("switch", name=f"Enabled: {receiver.url}").click()
    expect(row).to_contain_text("Disabled")
    page.get_by_role("button", name=f"Test and log {receiver.url}").click()
    page.get_by_role("button", name=re.compile("Retry delivery")).click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("disabled")
    expect(alert).to_contain_text("Request id")
    time.sleep(1)
    assert receiver.count == 1

    # Delete with confirmation.
    page.get_by_role("link", name="← All endpoints").click()
    page.get_by_role("button", name=f"Delete {receiver.url}").click()
    page.get_by_role("dialog", name="Delete this endpoint?").get_by_role(
        "button", name="Delete endpoint"
    ).click()
    expect(page.get_by_text("No webhook endpoints yet")).to_be_visible()


def add_endpoint(page: Any, url: str, events: list[str]) -> str:
    """Add an endpoint through the modal; returns its signing secret (shown once)."""
    page.get_by_role("button", name="Add endpoint").click()
    dialog = page.get_by_role("dialog", name="Add endpoint")
    dialog.get_by_label("Endpoint URL").fill(url)
    for event in events:
        dialog.get_by_label(event, exact=True).check()
    dialog.get_by_role("button", name="Add endpoint").click()
    added = page.get_by_role("dialog", name="Endpoint added")
    secret: str = added.get_by_label("Signing secret").inner_text()
    added.get_by_role("button", name="Done").click()
    return secret


def test_disabled_endpoint_gets_no_fanned_out_events(
    page: Any, stack: DashboardStack, receiver: WebhookReceiver
) -> None:
    """Disable in the UI, then a real event: a contact made through the gateway is a
    `contact.created` (campaigns' outbox → relay → RabbitMQ → webhooks worker). The enabled
    endpoint's receiver gets it signed; the disabled one gets nothing and logs nothing.
    Enabled again, it gets the next event (and not the one it missed)."""
    from playwright.sync_api import expect

    other = WebhookReceiver().start()
    try:
        sign_up(page)
        page.get_by_role("button", name="Create your first API key").click()
        key = create_key(page, "contacts key", ["manage_contacts"])
        close_key_dialog(page)

        page.get_by_role("link", name="Webhooks").click()
        add_endpoint(page, receiver.url, ["contact.created"])
        other_secret = add_endpoint(page, other.url, ["contact.created"])
        off = page.get_by_role("switch", name=f"Enabled: {receiver.url}")
        off.click()
        expect(page.get_by_role("row", name=receiver.url)).to_contain_text("Disabled")
        expect(off).not_to_be_checked()
        expect(page.get_by_role("switch", name=f"Enabled: {other.url}")).to_be_checked()

        def new_contact(email: str) -> None:
            r = httpx.post(
                f"{stack.url}/api/v1/contacts",
                json={"email": email},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert r.status_code == 201, r.text

        first = f"first-{uuid.uuid4().hex[:8]}@example.com"
        new_contact(first)
        got = other.wait_for(1)[0]
        event = Webhook(other_secret).verify(got.body, got.headers)
        assert event["type"] == "contact.created"
        assert first in got.body.decode()

        # The fan-out of that event is done (the enabled endpoint got it): the disabled one
        # got no request and has no delivery to show.
        assert receiver.count == 0
        page.get_by_role("button", name=f"Test and log {receiver.url}").click()
        expect(page.get_by_text("No deliveries match.")).to_be_visible()
        page.get_by_role("link", name="← All endpoints").click()
        page.get_by_role("button", name=f"Test and log {other.url}").click()
        log_row = page.get_by_role("region", name="Deliveries").get_by_role("row").nth(1)
        expect(log_row).to_contain_text("contact.created")
        expect(log_row).to_contain_text("succeeded")

        # Enabled again: the next event reaches it, the missed one never does.
        page.get_by_role("link", name="← All endpoints").click()
        page.get_by_role("switch", name=f"Enabled: {receiver.url}").click()
        expect(page.get_by_role("switch", name=f"Enabled: {receiver.url}")).to_be_checked()
        second = f"second-{uuid.uuid4().hex[:8]}@example.com"
        new_contact(second)
        assert len(other.wait_for(2)) == 2
        received = receiver.wait_for(1)
        assert len(received) == 1
        assert second in received[0].body.decode() and first not in received[0].body.decode()
    finally:
        other.stop()


def test_test_mode_switch_shows_sandbox_endpoints(
    page: Any, stack: DashboardStack, receiver: WebhookReceiver
) -> None:
    """A session acting in test mode (X-PM-Mode, checked by the gateway) sees only test data."""
    from playwright.sync_api import expect

    sign_up(page)
    page.get_by_role("switch", name="Test mode").check()
    expect(page.get_by_text("Test mode: you are viewing sandbox")).to_be_visible()
    page.get_by_role("link", name="Webhooks").click()
    page.get_by_role("button", name="Add endpoint").click()
    dialog = page.get_by_role("dialog", name="Add endpoint")
    dialog.get_by_label("Endpoint URL").fill(receiver.url)
    dialog.get_by_label("All events").check()
    dialog.get_by_role("button", name="Add endpoint").click()
    page.get_by_role("dialog", name="Endpoint added").get_by_role("button", name="Done").click()
    expect(page.get_by_role("row", name=receiver.url)).to_be_visible()

    page.get_by_role("switch", name="Test mode").uncheck()
    expect(page.get_by_text("No webhook endpoints yet")).to_be_visible()
    page.get_by_role("switch", name="Test mode").check()
    expect(page.get_by_role("row", name=receiver.url)).to_be_visible()


# ---------------------------------------------------------------- sessions and XSS


def test_forged_or_revoked_sessions_show_no_data(browser: Any, stack: DashboardStack) -> None:
    from playwright.sync_api import expect

    forged = browser.new_context(base_url=stack.url)
    forged.add_cookies(
        [
            {
                "name": "pm_refresh",
                "value": "rt_" + "A" * 43,
                "domain": "127.0.0.1",
                "path": "/api/v1/auth",
                "secure": True,
                "httpOnly": True,
                "sameSite": "Strict",
            }
        ]
    )
    page = forged.new_page()
    page.goto("/dashboard/settings/developers/api-keys")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("table")).to_have_count(0)
    forged.close()

    # A real session, signed out: its cookie never brings the data back.
    context = browser.new_context(base_url=stack.url)
    page = context.new_page()
    sign_up(page)
    old = [c for c in context.cookies() if c["name"] == "pm_refresh"]
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    context.close()
    replay = browser.new_context(base_url=stack.url)
    replay.add_cookies(old)
    page = replay.new_page()
    page.goto("/dashboard/settings/developers/api-keys")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    replay.close()

    # A forged access token is refused by the gateway.
    r = httpx.get(
        f"{stack.url}/api/v1/platform/api-keys",
        headers={"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.forged"},
    )
    assert r.status_code == 401


def test_xss_payloads_render_as_text(page: Any, stack: DashboardStack) -> None:
    from playwright.sync_api import expect

    sign_up(page)
    page.get_by_role("button", name="Create your first API key").click()
    create_key(page, XSS, ["read_analytics"], mode="Test")
    close_key_dialog(page)
    expect(page.get_by_role("cell", name=XSS, exact=True)).to_be_visible()
    page.get_by_role("button", name=f"Details of {XSS}").click()
    expect(page.get_by_role("dialog", name=f"Key: {XSS}")).to_be_visible()
    assert page.evaluate("window.__xss") is None
    assert page.locator("img[src=x]").count() == 0


def test_api_errors_are_shown_in_words_with_the_request_id(
    page: Any, stack: DashboardStack
) -> None:
    from playwright.sync_api import expect

    page.goto("/dashboard/signin")
    page.get_by_label("Email").fill(f"nobody-{uuid.uuid4().hex[:8]}@example.com")
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Sign in").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("email or password")
    expect(alert).to_contain_text(re.compile(r"Request id: \S+"))

    # The account's login budget runs out: the 429 says when to retry.
    def throttled() -> bool:
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_timeout(300)
        return "Too many requests" in alert.inner_text()

    eventually(throttled, what="a 429 after repeated failures")
    expect(alert).to_contain_text(re.compile(r"Retry in \d+ seconds"))


# ---------------------------------------------------------------- billing


def test_billing_page(page: Any, stack: DashboardStack) -> None:
    from playwright.sync_api import expect

    sign_up(page)
    page.get_by_role("link", name="Billing").click()
    expect(page.get_by_role("heading", name="Current plan")).to_be_visible()
    expect(page.get_by_role("heading", name="Payments")).to_be_visible()
    page.goto("/dashboard/settings/billing?checkout=canceled")
    expect(page.get_by_role("status")).to_contain_text("Checkout was canceled")
    page.get_by_role("link", name="Billing").click()
    expect(page.get_by_role("heading", name="Current plan")).to_be_visible()
    upgrade = page.get_by_role("button", name=re.compile("^Upgrade to"))
    expect(upgrade.first).to_be_visible()
    with page.expect_request(re.compile(re.escape(stack.billing.fake.url))) as req:
        upgrade.first.click()
    assert "/pay/cs_live_" in req.value.url  # the fake Stripe Checkout page


def test_billing_checkout_through_stripe_changes_the_plan(page: Any, stack: DashboardStack) -> None:
    """Upgrade → the (fake) Stripe hosted Checkout page → Pay → back on the billing page,
    which shows the new plan once Stripe's webhook reached billing: checkout → webhook →
    plan change, all through real processes."""
    from playwright.sync_api import expect

    sign_up(page)
    # Billing sends Stripe's customer back to its PM_DASHBOARD_URL (a name that resolves
    # nowhere in these tests): the browser follows it to this stack's gateway.
    dashboard_host = urlsplit(stack.billing.env.get("PM_DASHBOARD_URL", "http://dashboard.test"))
    page.context.route(
        f"{dashboard_host.scheme}://{dashboard_host.netloc}/**",
        lambda route: route.fulfill(
            status=303, headers={"Location": _on_gateway(stack, route.request.url)}
        ),
    )
    page.get_by_role("link", name="Billing").click()
    plan = page.get_by_role("definition").first
    expect(plan).not_to_have_text("Pro")
    expect(page.get_by_text("No payments yet.")).to_be_visible()
    page.get_by_role("button", name="Upgrade to Pro").click()

    # Stripe's hosted page (the fake, labelled as one): pay.
    page.wait_for_url(re.compile(re.escape(stack.billing.fake.url) + r"/c/pay/cs_live_"))
    expect(page.get_by_role("heading", name=re.compile("Checkout"))).to_be_visible()
    page.get_by_role("button", name="Pay").click()

    # Back on the dashboard: the page waits for the webhook, then shows the new plan.
    page.wait_for_url(
        re.compile(re.escape(stack.url) + r"/dashboard/settings/billing\?checkout=success")
    )
    expect(page.get_by_role("status").filter(has_text="payment went through")).to_contain_text(
        "Your plan is now Pro", timeout=60_000
    )
    expect(plan).to_have_text("Pro")
    expect(page.get_by_role("listitem").filter(has_text="Your plan")).to_contain_text("Pro")
    payments = page.get_by_role("region", name="Payments")
    expect(payments.get_by_role("row").nth(1)).to_contain_text("paid")
    expect(page.get_by_role("button", name="Upgrade to Pro")).to_have_count(0)

    # The plan is the tenant's, not the page's: a fresh load shows it too.
    page.goto("/dashboard/settings/billing")
    expect(page.get_by_role("definition").first).to_have_text("Pro")


def _on_gateway(stack: DashboardStack, url: str) -> str:
    parts = urlsplit(url)
    return f"{stack.url}{parts.path}" + (f"?{parts.query}" if parts.query else "")


# ---------------------------------------------------------------- accessibility, layout, serving


def test_every_page_passes_axe_and_is_screenshotted(
    page: Any, stack: DashboardStack, receiver: WebhookReceiver
) -> None:
    from playwright.sync_api import expect

    page.goto("/dashboard/signin")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert run_axe(page) == []
    screenshots(page, "signin")

    sign_up(page)
    assert run_axe(page) == []
    screenshots(page, "api-keys-empty")
    page.get_by_role("button", name="Create your first API key").click()
    assert run_axe(page) == []
    create_key(page, "docs key", ["send_email", "read_analytics"])
    assert run_axe(page) == []
    screenshots(page, "api-key-created")
    close_key_dialog(page)
    assert run_axe(page) == []
    screenshots(page, "api-keys")
    page.get_by_role("button", name="Details of docs key").click()
    expect(page.get_by_role("img", name=re.compile("Requests and errors"))).to_be_visible()
    assert run_axe(page) == []
    page.get_by_role("button", name="Close").click()

    page.get_by_role("link", name="Webhooks").click()
    page.get_by_role("button", name="Add endpoint").click()
    dialog = page.get_by_role("dialog", name="Add endpoint")
    assert run_axe(page) == []
    screenshots(page, "webhook-create")
    dialog.get_by_label("Endpoint URL").fill(receiver.url)
    dialog.get_by_label("email.bounced", exact=True).check()
    dialog.get_by_role("button", name="Add endpoint").click()
    page.get_by_role("dialog", name="Endpoint added").get_by_role("button", name="Done").click()
    expect(page.get_by_role("row", name=receiver.url)).to_be_visible()
    assert run_axe(page) == []
    screenshots(page, "webhooks")
    page.get_by_role("button", name=f"Test and log {receiver.url}").click()
    page.get_by_role("button", name="Send test").click()
    expect(page.get_by_role("status").filter(has_text="Test")).to_be_visible()
    expect(page.get_by_role("region", name="Deliveries")).to_be_visible()
    assert run_axe(page) == []
    screenshots(page, "webhook-detail")

    page.get_by_role("link", name="Billing").click()
    expect(page.get_by_role("heading", name="Current plan")).to_be_visible()
    assert run_axe(page) == []
    screenshots(page, "billing")

    # Keyboard: after a reload (the session comes back through the cookie), the first Tab
    # reaches the skip link, Enter moves focus to the content.
    page.reload()
    expect(page.get_by_role("heading", name="Current plan")).to_be_visible()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"


def test_gateway_serves_the_app_with_csp_and_cache_headers(stack: DashboardStack) -> None:
    with httpx.Client(base_url=stack.url) as client:
        root = client.get("/dashboard")
        assert root.status_code == 308 and root.headers["location"] == "/dashboard/"
        deep = client.get("/dashboard/settings/billing?checkout=success")
        assert deep.status_code == 200 and '<div id="root">' in deep.text
        csp = deep.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert deep.headers["cache-control"] == "no-cache"
        asset = re.search(r'src="(/dashboard/assets/[^"]+\.js)"', deep.text)
        assert asset, deep.text
        js = client.get(asset.group(1))
        assert js.status_code == 200
        assert js.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert js.headers["content-type"].startswith("text/javascript")
        # API routes still reach the services, behind the dashboard routes.
        assert client.get("/api/v1/webhooks").status_code == 401
        assert json.loads(client.get("/api/v1/nope").text)["success"] is False
