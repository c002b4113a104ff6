// Calls an integrator writes against the types openapi-typescript generates from
// docs/openapi.yaml. `tsc` must accept this file: a response that loses its type (a bare
// `data: any` would not catch the errors marked @ts-expect-error) or a renamed field fails it.
import type { components, paths } from "./generated/openapi";

type Schemas = components["schemas"];
type Ok<P extends keyof paths, M extends keyof paths[P]> = paths[P][M] extends {
  responses: infer R;
}
  ? R extends { 200: { content: { "application/json": infer B } } }
    ? B
    : R extends { 201: { content: { "application/json": infer B } } }
      ? B
      : R extends { 202: { content: { "application/json": infer B } } }
        ? B
        : never
  : never;

async function call<T>(path: string, init?: RequestInit): Promise<T> {
  const response = await fetch(`https://api.penguinmails.com${path}`, {
    ...init,
    headers: { Authorization: "Bearer pm_test_x", "Content-Type": "application/json" },
  });
  return (await response.json()) as T;
}

// Lists: typed items and one pagination shape.
type ContactQuery = NonNullable<paths["/api/v1/contacts"]["get"]["parameters"]["query"]>;
const contactQuery: ContactQuery = {
  limit: 10,
  sort_by: "email",
  order: "asc",
  tag: ["vip"],
  status: "active",
};
// @ts-expect-error: sort_by is one of the indexed columns only
const badSort: ContactQuery = { sort_by: "first_name" };

export async function listContacts(): Promise<string[]> {
  const page = await call<Ok<"/api/v1/contacts", "get">>(
    `/api/v1/contacts?limit=${contactQuery.limit ?? 50}`,
  );
  const emails: string[] = page.data.map((c: Schemas["Contact"]) => c.email);
  const next: string | null | undefined = page.meta.pagination?.next_cursor;
  const more: boolean | undefined = page.meta.pagination?.has_more;
  // @ts-expect-error: a contact has no `mail` field
  page.data[0]?.mail;
  return more && next ? emails : emails.slice();
}

export async function campaignFlow(): Promise<void> {
  const created = await call<Ok<"/api/v1/campaigns", "post">>("/api/v1/campaigns", {
    method: "POST",
  });
  const campaign: Schemas["Campaign"] = created.data;
  const status: "draft" | "scheduled" | "running" | "paused" | "completed" | "cancelled" =
    campaign.status;
  const html: string | null | undefined = campaign.content.html;
  const started = await call<Ok<"/api/v1/campaigns/{campaign_id}/start", "post">>(
    `/api/v1/campaigns/${campaign.id}/start`,
    { method: "POST" },
  );
  const runningId: string = started.data.id;
  const stats = await call<Ok<"/api/v1/analytics/campaigns/{campaign_id}", "get">>(
    `/api/v1/analytics/campaigns/${runningId}`,
  );
  const openRate: number = stats.data.rates.open_rate;
  void [status, html, openRate];
}

export async function sendAndTrack(): Promise<number> {
  const body: paths["/api/v1/emails/send"]["post"]["requestBody"] extends
    | { content: { "application/json": infer B } }
    | undefined
    ? B
    : never = {
    from: "news@example.com",
    to: "ada@example.com",
    subject: "Hi",
    html: "<p>Hi</p>",
  };
  const accepted = await call<Ok<"/api/v1/emails/send", "post">>("/api/v1/emails/send", {
    method: "POST",
    body: JSON.stringify(body),
  });
  const email = await call<Ok<"/api/v1/emails/{message_id}", "get">>(
    `/api/v1/emails/${accepted.data.message_id}`,
  );
  const sender: string = email.data.from;
  const timeline: Schemas["TimelineEntry"][] = email.data.timeline;
  void sender;
  return timeline.length + email.data.opens.total;
}

export async function webhooks(): Promise<string> {
  const created = await call<Ok<"/api/v1/webhooks", "post">>("/api/v1/webhooks", {
    method: "POST",
  });
  const secret: string = created.data.secret;
  const log = await call<Ok<"/api/v1/webhooks/{endpoint_id}/deliveries", "get">>(
    `/api/v1/webhooks/${created.data.id}/deliveries`,
  );
  const codes: (number | null | undefined)[] = log.data.map((d) => d.last_status_code);
  const stats = await call<Ok<"/api/v1/webhooks/{endpoint_id}/stats", "get">>(
    `/api/v1/webhooks/${created.data.id}/stats`,
  );
  const day: Schemas["StatsWindow"] = stats.data["24h"];
  void [codes, day];
  return secret;
}

// Error codes are an open string: a code added after this client was generated still
// type-checks, and the known ones are plain strings to compare with.
export function describe(error: Schemas["ErrorEnvelope"]): string {
  const code: string = error.error.code;
  const future: Schemas["ErrorBody"] = { code: "a_code_added_next_year", message: "later" };
  void future;
  return code === "invalid_cursor" ? "start the list again" : error.error.message;
}

void badSort;
