// Runtime lists the pages render as checkboxes. SCOPES is checked against the spec's enum at
// compile time; EVENT_TYPES is the fallback used until GET /api/v1/events/types answers
// (tests/unit/dashboard checks it equals the webhooks service's catalog).
import type { Scope } from "./api/models";

export const SCOPES = [
  "send_email",
  "read_analytics",
  "manage_contacts",
  "manage_campaigns",
  "manage_templates",
  "manage_domains",
  "read_inbox",
  "manage_webhooks",
] as const satisfies readonly Scope[];
// A scope the spec has and this list lacks fails the build here.
const _allScopes: Exclude<Scope, (typeof SCOPES)[number]> extends never ? true : never = true;
void _allScopes;

export const EVENT_TYPES: readonly string[] = [
  "email.queued",
  "email.sent",
  "email.delivered",
  "email.opened",
  "email.clicked",
  "email.replied",
  "email.auto_replied",
  "email.bounced",
  "email.complained",
  "email.unsubscribed",
  "email.failed",
  "inbox_message.received",
  "campaign.created",
  "campaign.updated",
  "campaign.sent",
  "campaign.started",
  "campaign.paused",
  "campaign.resumed",
  "campaign.completed",
  "campaign.cancelled",
  "contact.created",
  "contact.updated",
  "contact.deleted",
  "analytics.updated",
  "goal.converted",
  "revenue.recorded",
  "contact_import.completed",
  "webhook.endpoint_disabled",
  "domain.created",
  "domain.verified",
  "domain.verification_failed",
  "domain.health_changed",
  "domain.deleted",
];
