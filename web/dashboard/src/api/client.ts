// The typed API client: openapi-fetch over the types openapi-typescript generates from
// docs/openapi.yaml (`npm run gen:api`). Every request shape comes from the spec.
import createClient, { type Middleware } from "openapi-fetch";
import type { paths } from "./schema";
import { session } from "../session";

export const api = createClient<paths>({ baseUrl: "" });

const pending = new WeakMap<Request, Request>();

const auth: Middleware = {
  onRequest({ request }) {
    if (request.url.includes("/api/v1/auth/")) {
      request.headers.set("X-Refresh-Token-Transport", "cookie");
      return request;
    }
    if (session.accessToken) request.headers.set("Authorization", `Bearer ${session.accessToken}`);
    request.headers.set("X-PM-Mode", session.mode);
    pending.set(request, request.clone());
    return request;
  },
  async onResponse({ request, response }) {
    // An expired access token: refresh once through the cookie, then replay the request.
    if (response.status !== 401 || request.url.includes("/api/v1/auth/")) return response;
    const copy = pending.get(request);
    if (!copy || !(await session.refresh())) return response;
    copy.headers.set("Authorization", `Bearer ${session.accessToken}`);
    return fetch(copy);
  },
};
api.use(auth);

/** An error answer of the API, in words, with its request id (and when to retry on 429). */
export class ApiProblem extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string,
    readonly requestId: string | null,
    readonly retryAfter: number | null,
  ) {
    super(message);
  }

  static from(error: unknown, response: Response): ApiProblem {
    const body = (error ?? {}) as {
      error?: { message?: string; code?: string; request_id?: string; details?: { field?: string; message?: string }[] };
    };
    const e = body.error ?? {};
    const details = (e.details ?? []).map((d) => `${d.field ?? ""}: ${d.message ?? ""}`).join("; ");
    const retry = Number(response.headers.get("Retry-After"));
    return new ApiProblem(
      (e.message ?? `The request failed (HTTP ${response.status}).`) + (details ? ` (${details})` : ""),
      response.status,
      e.code ?? "http_error",
      e.request_id ?? response.headers.get("X-Request-Id"),
      Number.isFinite(retry) && response.headers.has("Retry-After") ? retry : null,
    );
  }
}

type Result = { data?: unknown; error?: unknown; response: Response };

/** The `data` of a success envelope, or an ApiProblem thrown. */
export async function unwrap<T>(call: Promise<Result>): Promise<T> {
  let r: Result;
  try {
    r = await call;
  } catch {
    throw new ApiProblem("The server could not be reached. Check your connection and retry.", 0, "network", null, null);
  }
  if (r.error !== undefined || !r.response.ok) throw ApiProblem.from(r.error, r.response);
  return (r.data as { data: T }).data;
}
