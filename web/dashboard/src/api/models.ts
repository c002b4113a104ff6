// Response types. Each is the spec's own type once docs/openapi.yaml types that response
// (`Spec<...>`); until then the fallback written here, the shape the service answers today.
import type { components, paths } from "./schema";

type Json<R> = R extends { content: { "application/json": infer J } } ? J : unknown;
type Success<Op> = Op extends { responses: infer Rs }
  ? Rs extends { 200: infer R }
    ? Json<R>
    : Rs extends { 201: infer R }
      ? Json<R>
      : Rs extends { 202: infer R }
        ? Json<R>
        : unknown
  : unknown;
type DataOf<E> = E extends { data: infer D } ? D : unknown;
type Spec<P extends keyof paths, M extends keyof paths[P]> = DataOf<Success<paths[P][M]>>;
type Or<T, Fallback> = unknown extends T ? Fallback : T;

export type Scope = components["schemas"]["CreateApiKeyRequest"]["scopes"][number];
export type CreateKeyBody = components["schemas"]["CreateApiKeyRequest"];
export type EndpointCreate = components["schemas"]["EndpointCreate"];

export type Session = Or<
  Spec<"/api/v1/auth/login", "post">,
  {
    access_token: string;
    expires_in: number;
    refresh_token: string | null;
    user: { id: string; email: string; role: string };
    tenant: { id: string; name: string; plan: string };
  }
>;
export type Tokens = Or<Spec<"/api/v1/auth/refresh", "post">, { access_token: string; expires_in: number }>;

export type ApiKey = Or<
  Spec<"/api/v1/platform/api-keys/{key_id}", "get">,
  {
    id: string;
    name: string;
    mode: string;
    masked_key: string;
    last4: string;
    scopes: string[];
    status: "active" | "revoked" | "expired";
    created_at: string;
    expires_at: string | null;
    revoked_at: string | null;
    previous_valid_until: string | null;
    usage: { request_count?: number | null; error_count?: number | null; last_used_at?: string | null };
  }
>;
export type ApiKeyCreated = ApiKey & { key: string };
export type Usage = Or<
  Spec<"/api/v1/platform/api-keys/{key_id}/usage", "get">,
  {
    granularity: string;
    totals: { request_count: number; error_count: number; last_used_at: string | null };
    buckets: { minute: string; requests: number; errors: number }[];
  }
>;

export type Endpoint = Or<
  Spec<"/api/v1/webhooks/{endpoint_id}", "get">,
  {
    id: string;
    url: string;
    description: string | null;
    events: string[];
    filters: { campaign_ids: string[]; contact_tags: string[] };
    enabled: boolean;
    disabled_reason: string | null;
    mode: string;
    created_at: string;
  }
>;
export type EndpointCreated = Endpoint & { secret: string };
export type Rotated = Or<Spec<"/api/v1/webhooks/{endpoint_id}/rotate-secret", "post">, { secret: string; previous_secret_expires_at: string | null }>;
type Window = {
  attempts: number;
  success_rate: number | null;
  error_rate: number | null;
  avg_response_ms: number | null;
};
export type EndpointStats = Or<
  Spec<"/api/v1/webhooks/{endpoint_id}/stats", "get">,
  { health: "healthy" | "degraded" | "failing"; enabled: boolean; "24h": Window; "7d": Window }
>;
export type Delivery = Or<
  Spec<"/api/v1/webhooks/{endpoint_id}/deliveries/{delivery_id}", "get">,
  {
    id: string;
    event_type: string;
    status: string;
    test: boolean;
    attempts: number;
    last_status_code: number | null;
    last_error: string | null;
    created_at: string;
    attempt_log?: { response_ms: number | null; status_code: number | null; attempted_at: string }[];
  }
>;
export type TestResult = Or<
  Spec<"/api/v1/webhooks/{endpoint_id}/test", "post">,
  { delivery_id: string; payload: unknown; attempt: { succeeded: boolean; status_code: number | null; response_ms: number | null; error: string | null } }
>;

export type BillingState = components["schemas"]["BillingStateOut"];
export type Plan = components["schemas"]["PlanOut"];
export type Payment = components["schemas"]["PaymentOut"];
