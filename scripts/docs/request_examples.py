"""A realistic request body per operation, published as the `example` of its JSON request body
in docs/openapi.yaml and used by every generated code example and the Postman collection.

Values a schema alone cannot make plausible (an event type, a recipient list, a secret of the
right length) live here. Ids of objects made earlier (`template_0001`, `contact_0001`) are the
same placeholders the path parameters use: replace them with yours (the docs test and the
Postman collection replace them with ids they created)."""

from __future__ import annotations

from typing import Any

SENDER = "hello@mail.yourdomain.example"

REQUEST_EXAMPLES: dict[str, Any] = {
    # billing
    "create_checkout_session": {"plan_id": "pro"},
    "create_portal_session": {},
    # campaigns
    "create_campaign": {
        "name": "Welcome series",
        "subject": "Welcome, {{ first_name }}",
        "content": {
            "html": "<h1>Welcome!</h1><p>Hi {{ first_name }}, thanks for joining.</p>",
            "text": "Hi {{ first_name }}, thanks for joining.",
        },
        "recipients": [{"email": "jane@example.com", "personalization": {"first_name": "Jane"}}],
        "settings": {"track_opens": True, "track_clicks": True},
    },
    "update_campaign": {"name": "Welcome series (v2)", "daily_cap": 200},
    # contacts
    "create_contact": {
        "email": "jane@example.com",
        "first_name": "Jane",
        "last_name": "Doe",
        "tags": ["newsletter"],
    },
    "import_contacts": [
        {"email": "jane@example.com", "first_name": "Jane", "tags": ["newsletter"]},
        {"email": "john@example.com", "first_name": "John"},
    ],
    "submit_import": [
        {"email": "jane@example.com", "first_name": "Jane", "tags": ["newsletter"]},
        {"email": "john@example.com", "first_name": "John"},
    ],
    "update_contact": {"first_name": "Janet", "tags": ["newsletter", "vip"]},
    "record_conversion": {
        "email": "jane@example.com",
        "goal": "purchase",
        "value": 49.0,
        "currency": "USD",
    },
    # templates
    "create_template": {
        "name": "Welcome",
        "key": "welcome",
        "subject": "Welcome, {{ first_name }}",
        "html": "<p>Hi {{ first_name }}, thanks for joining.</p>",
    },
    "update_template": {"subject": "Welcome aboard, {{ first_name }}"},
    "preview_template": {"data": {"first_name": "Jane"}},
    # domains
    "create_domain": {"name": "mail.yourdomain.example"},
    "store_dns_credentials": {"provider": "cloudflare", "api_token": "cf-token-0123456789abcdef"},
    "update_domain": {"default_from": SENDER, "default_from_name": "Acme"},
    # emails
    "add_rule": {"category": "marketing", "primary_provider": "postmark"},
    "send_email": {
        "to": "jane@example.com",
        "subject": "Hello {{ first_name }}",
        "content": {"html": "<p>Hello {{ first_name }}!</p>", "text": "Hello {{ first_name }}!"},
        "variables": {"first_name": "Jane"},
        "tracking": {"track_opens": True, "track_clicks": True},
    },
    "send_bulk": {
        "subject": "Our November news",
        "content": {"html": "<p>Hi {{ first_name }}, here is the news.</p>"},
        "recipients": [
            {"email": "jane@example.com", "personalization": {"first_name": "Jane"}},
            {"email": "john@example.com", "personalization": {"first_name": "John"}},
        ],
        "batch_size": 100,
        "delay_between_batches": 5,
    },
    "set_cap": {"scope": "domain", "value": "mail.yourdomain.example", "daily_limit": 500},
    "add_suppression": {"email": "bounced@example.com"},
    "put_sending_settings": {
        "default_from": SENDER,
        "default_from_name": "Acme",
        "default_reply_to": "support@yourdomain.example",
    },
    # auth and API keys
    "signup": {
        "email": "jane@example.com",
        "password": "correct horse battery staple",
        "company": "Acme Inc.",
    },
    "login": {"email": "jane@example.com", "password": "correct horse battery staple"},
    "refresh": {"refresh_token": "refresh_token_0001"},
    "logout": {"refresh_token": "refresh_token_0001"},
    "create_key": {
        "name": "Production server",
        "scopes": ["send_email", "manage_contacts"],
        "mode": "test",
    },
    "regenerate_key": {"grace_period_seconds": 3600},
    # events and webhooks
    "trigger_event": {"type": "email.opened"},
    "create_endpoint": {
        "url": "https://example.com/webhooks/penguinmails",
        "events": ["email.delivered", "email.opened", "email.bounced"],
        "description": "Production receiver",
    },
    "update_endpoint": {"events": ["email.delivered", "email.bounced"], "description": "Primary"},
    "patch_endpoint": {"description": "Primary receiver"},
    "recover": {"since": "2026-01-15T09:30:00Z"},
    "rotate_secret": {"secret": "your-webhook-secret"},
    "send_test": {"event_type": "email.opened"},
    # inbox
    "update_thread": {"read": True, "labels": ["interested"]},
    "reply": {"text": "Thanks for getting back to me. Does Tuesday at 10:00 work for a call?"},
}
