/** Errors: one class per kind of failure, all carrying the API's `code`, `message` and request id. */

import type { ErrorDetail } from './generated/types.js';

export type { ErrorDetail };

export interface ErrorInit {
  status?: number;
  code?: string;
  details?: ErrorDetail[];
  requestId?: string | null;
  headers?: Headers;
  body?: unknown;
  cause?: unknown;
}

/** Base class of every error the SDK throws. */
export class PenguinMailsError extends Error {
  readonly status: number | undefined;
  readonly code: string;
  readonly details: ErrorDetail[];
  readonly requestId: string | null;
  readonly headers: Headers | undefined;
  readonly body: unknown;

  constructor(message: string, init: ErrorInit = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = new.target.name;
    this.status = init.status;
    this.code = init.code ?? 'error';
    this.details = init.details ?? [];
    this.requestId = init.requestId ?? null;
    this.headers = init.headers;
    this.body = init.body;
  }
}

/** 400 / 422: the request was invalid; `details` names the fields. */
export class ValidationError extends PenguinMailsError {}
/** 401: missing, invalid, expired or revoked credentials. */
export class AuthenticationError extends PenguinMailsError {}
/** 403: the key or user lacks the scope (or the plan) for this operation. */
export class PermissionError extends PenguinMailsError {}
/** 404: no such object (or another tenant's). */
export class NotFoundError extends PenguinMailsError {}
/** 409: conflicts with the current state (a duplicate, an idempotency key reused...). */
export class ConflictError extends PenguinMailsError {}
/** 429 after the retries: `retryAfter` is how long to wait, in milliseconds. */
export class RateLimitError extends PenguinMailsError {
  readonly retryAfter: number | null;
  constructor(message: string, init: ErrorInit & { retryAfter?: number | null } = {}) {
    super(message, init);
    this.retryAfter = init.retryAfter ?? null;
  }
}
/** Any other error answer of the API (5xx after the retries, ...). */
export class APIError extends PenguinMailsError {}
/** The API could not be reached (DNS, refused or reset connection) after the retries. */
export class APIConnectionError extends PenguinMailsError {}
/** No answer within the timeout, after the retries. */
export class APITimeoutError extends APIConnectionError {}
/** A webhook whose signature, timestamp or headers do not verify. */
export class WebhookVerificationError extends PenguinMailsError {}

export function errorFor(
  status: number,
  body: any,
  headers: Headers,
  retryAfterMs: number | null,
): PenguinMailsError {
  const err = body && typeof body === 'object' && body.error ? body.error : {};
  const init: ErrorInit = {
    status,
    code: typeof err.code === 'string' ? err.code : `http_${status}`,
    details: Array.isArray(err.details) ? err.details : [],
    requestId: err.request_id ?? headers.get('x-request-id'),
    headers,
    body,
  };
  const message = typeof err.message === 'string' ? err.message : `HTTP ${status}`;
  if (status === 400 || status === 422) return new ValidationError(message, init);
  if (status === 401) return new AuthenticationError(message, init);
  if (status === 403) return new PermissionError(message, init);
  if (status === 404) return new NotFoundError(message, init);
  if (status === 409) return new ConflictError(message, init);
  if (status === 429) return new RateLimitError(message, { ...init, retryAfter: retryAfterMs });
  return new APIError(message, init);
}
