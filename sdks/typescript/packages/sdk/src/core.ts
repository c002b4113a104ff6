/** The transport: auth, camelCase → snake_case, retries with backoff, timeouts, pagination. */

import {
  APIConnectionError,
  APITimeoutError,
  PenguinMailsError,
  errorFor,
} from './errors.js';

export const DEFAULT_BASE_URL = 'https://api.penguinmails.com';
export const VERSION = '0.1.0';

export interface ClientOptions {
  /** `pm_live_…` / `pm_test_…`; default: the `PENGUINMAILS_API_KEY` environment variable. */
  apiKey?: string | null;
  /** A dashboard access token (JWT), for account routes such as `apiKeys`. */
  accessToken?: string | null;
  /** Default: `PENGUINMAILS_BASE_URL`, else https://api.penguinmails.com. */
  baseUrl?: string | null;
  /** Retries of a failed request (429, 5xx, connection errors); default 2. */
  maxRetries?: number;
  /** Milliseconds per attempt; default 60 000. */
  timeout?: number;
  /** A fetch implementation; default: the global one. */
  fetch?: typeof fetch;
  /** Headers sent with every request. */
  defaultHeaders?: Record<string, string>;
}

export interface RequestOptions {
  maxRetries?: number;
  timeout?: number;
  /** Your own idempotency key for a POST (default: one generated per call). */
  idempotencyKey?: string;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

export interface Operation {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  path: string;
  query?: Record<string, unknown>;
  body?: unknown;
  /** 'key': API key (or access token); 'jwt': account routes; 'none': no credentials. */
  auth?: 'key' | 'jwt' | 'none';
  /** A POST the API deduplicates by `Idempotency-Key`: safe to retry with the same key. */
  idempotent?: boolean;
}

export interface ResponseMeta {
  request_id?: string | null;
  timestamp?: string;
  pagination?: {
    limit?: number;
    offset?: number;
    total?: number;
    next_cursor?: string | null;
    has_more?: boolean;
  };
  [key: string]: unknown;
}

// ----------------------------------------------------------------- camelCase → snake_case

/** Keys whose values are the integrator's own data: their keys are never rewritten. */
const VERBATIM = new Set(['custom_fields', 'personalization', 'metadata', 'variables']);

type CamelKey<S extends string> = S extends `${infer H}_${infer R}`
  ? `${H}${Capitalize<CamelKey<R>>}`
  : S;
type Verbatim = 'custom_fields' | 'personalization' | 'metadata' | 'variables';
export type Camelize<T> = T extends readonly (infer U)[]
  ? Camelize<U>[]
  : T extends Record<string, any>
    ? { [K in keyof T as K extends string ? CamelKey<K> : K]: K extends Verbatim ? T[K] : Camelize<T[K]> }
    : T;
/** What a method accepts: the API's snake_case fields, or the same in camelCase. */
export type Params<T> = T | Camelize<T>;

export function snakeKey(key: string): string {
  return key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').replace(/([A-Z])([A-Z][a-z])/g, '$1_$2').toLowerCase();
}

export function toSnake(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(toSnake);
  if (value === null || typeof value !== 'object' || value instanceof Date) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (v === undefined) continue;
    const key = snakeKey(k);
    out[key] = VERBATIM.has(key) ? v : toSnake(v);
  }
  return out;
}

// ----------------------------------------------------------------- the transport

function env(name: string): string | undefined {
  const proc = (globalThis as any).process;
  const value = proc?.env?.[name];
  return typeof value === 'string' && value !== '' ? value : undefined;
}

function uuid4(): string {
  const c = (globalThis as any).crypto;
  if (c?.randomUUID) return c.randomUUID();
  const b = new Uint8Array(16);
  if (c?.getRandomValues) c.getRandomValues(b);
  else for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
/** Longest `Retry-After` the SDK waits inside one call; longer waits surface as errors. */
export const MAX_RETRY_AFTER_MS = 60_000;

/** Milliseconds a `Retry-After` header asks for (seconds or an HTTP date), or null. */
export function parseRetryAfter(headers: Headers): number | null {
  const ms = headers.get('retry-after-ms');
  if (ms && !Number.isNaN(Number(ms))) return Number(ms);
  const raw = headers.get('retry-after');
  if (!raw) return null;
  const seconds = Number(raw);
  if (!Number.isNaN(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(raw);
  return Number.isNaN(date) ? null : Math.max(0, date - Date.now());
}

/** Exponential backoff with jitter: 0.5 s, 1 s, 2 s … capped at 8 s, minus up to 25 %. */
export function backoff(retry: number): number {
  const base = Math.min(500 * 2 ** retry, 8000);
  return base * (1 - 0.25 * Math.random());
}

/** Statuses worth another attempt: 408, 429 and 5xx but 501. */
export function retryable(status: number): boolean {
  return status === 408 || status === 429 || (status >= 500 && status !== 501);
}

export class Transport {
  readonly apiKey: string | null;
  readonly accessToken: string | null;
  readonly baseUrl: string;
  readonly maxRetries: number;
  readonly timeout: number;
  /** The fetch implementation in use (the option, else the global one). */
  readonly fetchImpl: typeof fetch;
  private readonly defaultHeaders: Record<string, string>;

  constructor(options: ClientOptions = {}) {
    this.apiKey = options.apiKey ?? env('PENGUINMAILS_API_KEY') ?? null;
    this.accessToken = options.accessToken ?? env('PENGUINMAILS_ACCESS_TOKEN') ?? null;
    this.baseUrl = (options.baseUrl ?? env('PENGUINMAILS_BASE_URL') ?? DEFAULT_BASE_URL).replace(/\/+$/, '');
    this.maxRetries = options.maxRetries ?? 2;
    this.timeout = options.timeout ?? 60_000;
    const f = options.fetch ?? (globalThis as any).fetch;
    if (!f) throw new PenguinMailsError('No fetch implementation: pass `fetch` in the options');
    // Called as `this.fetchImpl(...)`: a browser's own fetch refuses any `this` but the window
    // ("Illegal invocation"), so the global one is bound to it.
    this.fetchImpl = options.fetch ? f : f.bind(globalThis);
    this.defaultHeaders = options.defaultHeaders ?? {};
  }

  private credential(auth: Operation['auth']): string | null {
    if (auth === 'none') return null;
    if (auth === 'jwt') return this.accessToken ?? this.apiKey;
    return this.apiKey ?? this.accessToken;
  }

  buildUrl(path: string, query?: Record<string, unknown>): string {
    const url = new URL(this.baseUrl + path);
    const params = (query ? toSnake(query) : {}) as Record<string, unknown>;
    for (const [key, value] of Object.entries(params)) {
      if (value === undefined || value === null) continue;
      for (const v of Array.isArray(value) ? value : [value]) {
        url.searchParams.append(key, v instanceof Date ? v.toISOString() : String(v));
      }
    }
    return url.toString();
  }

  /** One API call: the envelope's `data`, or a typed error after the retries. */
  async request<T>(op: Operation, options: RequestOptions = {}): Promise<T> {
    const { data } = await this.send(op, options);
    return data as T;
  }

  list<T>(op: Operation, options: RequestOptions = {}): PagePromise<T> {
    return new PagePromise<T>(this, op, options);
  }

  /** The URL and headers (credentials, User-Agent, default headers) of a call: what `send`
   * sends, and what the event stream opens its connections with. */
  prepare(op: Operation): { url: string; headers: Record<string, string> } {
    const url = this.buildUrl(op.path, op.query);
    const headers: Record<string, string> = {
      Accept: 'application/json',
      'User-Agent': `penguinmails-node/${VERSION}`,
      ...this.defaultHeaders,
    };
    const credential = this.credential(op.auth ?? 'key');
    if (credential) headers.Authorization = `Bearer ${credential}`;
    return { url, headers };
  }

  async send(op: Operation, options: RequestOptions = {}): Promise<{ data: unknown; meta: ResponseMeta }> {
    const { url, headers } = this.prepare(op);
    let body: string | undefined;
    if (op.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(toSnake(op.body));
    }
    // One key per call, reused by every retry: the API answers a retry with the stored result.
    const idempotencyKey = options.idempotencyKey ?? (op.idempotent ? uuid4() : undefined);
    if (idempotencyKey) headers['Idempotency-Key'] = idempotencyKey;
    Object.assign(headers, options.headers ?? {});
    const safeToRetry = op.method !== 'POST' || idempotencyKey !== undefined;
    const maxRetries = options.maxRetries ?? this.maxRetries;
    const timeout = options.timeout ?? this.timeout;

    for (let retry = 0; ; retry++) {
      const canRetry = safeToRetry && retry < maxRetries;
      const controller = new AbortController();
      const onAbort = () => controller.abort(options.signal?.reason);
      options.signal?.addEventListener('abort', onAbort, { once: true });
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        controller.abort();
      }, timeout);
      let response: Response;
      let text: string;
      try {
        response = await this.fetchImpl(url, { method: op.method, headers, body, signal: controller.signal });
        text = await response.text();
      } catch (cause) {
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        if (options.signal?.aborted) throw cause;
        if (canRetry) {
          await sleep(backoff(retry));
          continue;
        }
        if (timedOut) throw new APITimeoutError(`Request timed out after ${timeout} ms`, { code: 'timeout', cause });
        throw new APIConnectionError(`Connection error: ${(cause as Error)?.message ?? cause}`, {
          code: 'connection_error',
          cause,
        });
      }
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      let parsed: any = null;
      if (text) {
        try {
          parsed = JSON.parse(text);
        } catch {
          parsed = text;
        }
      }
      if (response.ok) {
        if (parsed && typeof parsed === 'object' && 'data' in parsed) {
          return { data: parsed.data, meta: parsed.meta ?? {} };
        }
        return { data: parsed, meta: {} };
      }
      const retryAfter = parseRetryAfter(response.headers);
      if (canRetry && retryable(response.status)) {
        const wait = retryAfter !== null && retryAfter <= MAX_RETRY_AFTER_MS ? retryAfter : backoff(retry);
        await sleep(wait);
        continue;
      }
      throw errorFor(response.status, parsed, response.headers, retryAfter);
    }
  }
}

/** What a generated resource class holds. */
export abstract class APIResource {
  constructor(protected readonly core: Transport) {}
}

// ----------------------------------------------------------------- pagination

/** One page of a list. `for await (const item of page)` walks this page and every later one. */
export class Page<T> implements AsyncIterable<T> {
  constructor(
    private readonly core: Transport,
    private readonly op: Operation,
    private readonly options: RequestOptions,
    readonly data: T[],
    readonly meta: ResponseMeta,
  ) {}

  get hasMore(): boolean {
    const p = this.meta.pagination;
    if (!p || this.data.length === 0) return false;
    return p.has_more ?? (p.next_cursor !== undefined && p.next_cursor !== null);
  }

  get nextCursor(): string | null {
    return this.meta.pagination?.next_cursor ?? null;
  }

  /** The next page, or null after the last one. */
  async nextPage(): Promise<Page<T> | null> {
    if (!this.hasMore) return null;
    const query = { ...(toSnake(this.op.query ?? {}) as Record<string, unknown>) };
    if (this.nextCursor) {
      delete query.offset;
      query.cursor = this.nextCursor;
    } else {
      const p = this.meta.pagination ?? {};
      query.offset = (p.offset ?? Number(query.offset ?? 0)) + this.data.length;
    }
    return fetchPage<T>(this.core, { ...this.op, query }, this.options);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    let page: Page<T> | null = this;
    while (page) {
      yield* page.data;
      page = await page.nextPage();
    }
  }
}

async function fetchPage<T>(core: Transport, op: Operation, options: RequestOptions): Promise<Page<T>> {
  const { data, meta } = await core.send(op, options);
  return new Page<T>(core, op, options, Array.isArray(data) ? (data as T[]) : [], meta);
}

/** A list call: `await` it for the first page, or `for await` it for every item of every page. */
export class PagePromise<T> implements PromiseLike<Page<T>>, AsyncIterable<T> {
  private promise: Promise<Page<T>> | null = null;

  constructor(
    private readonly core: Transport,
    private readonly op: Operation,
    private readonly options: RequestOptions,
  ) {}

  private first(): Promise<Page<T>> {
    this.promise ??= fetchPage<T>(this.core, this.op, this.options);
    return this.promise;
  }

  then<R1 = Page<T>, R2 = never>(
    onfulfilled?: ((value: Page<T>) => R1 | PromiseLike<R1>) | null,
    onrejected?: ((reason: any) => R2 | PromiseLike<R2>) | null,
  ): Promise<R1 | R2> {
    return this.first().then(onfulfilled, onrejected);
  }

  catch<R = never>(onrejected?: ((reason: any) => R | PromiseLike<R>) | null): Promise<Page<T> | R> {
    return this.first().catch(onrejected);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    yield* await this.first();
  }
}
