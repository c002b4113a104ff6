/**
 * The live event stream (`GET /api/v1/events/stream`, Server-Sent Events), hand-written: the
 * generator skips operations that do not answer JSON.
 *
 * `EventStream` reconnects by itself with `Last-Event-ID` (the id of the last event your loop
 * finished with, or the stream head's id the server names on connect), so a dropped
 * connection, the server's time limit or a reader cut off for falling behind costs neither an
 * event nor a duplicate. SSE framing is parsed here (`SSEDecoder`, the WHATWG rules) over
 * `fetch`'s `ReadableStream`: no dependency, Node.js ≥ 18 and browsers alike.
 */

import {
  MAX_RETRY_AFTER_MS,
  type Transport,
  backoff,
  parseRetryAfter,
  retryable,
} from './core.js';
import { APIConnectionError, APITimeoutError, PenguinMailsError, RateLimitError, errorFor } from './errors.js';
import { Events } from './generated/resources.js';

export const STREAM_PATH = '/api/v1/events/stream';
/** Heartbeats come every 15 s; a connection silent this long (ms) is dead: reconnect. */
export const DEFAULT_READ_TIMEOUT = 60_000;

// ----------------------------------------------------------------- SSE framing

/** One dispatched block of an SSE stream. `data` is empty for a block that only set `id` or
 * `retry` (the stream's opening frame): `EventSource` would fire no event for it. */
export interface SSEMessage {
  /** The last event id in force (the `id:` field persists from block to block, as in EventSource). */
  id: string;
  /** `event:`; '' when the block named none (EventSource calls that `message`). */
  event: string;
  /** The `data:` lines joined by '\n'. */
  data: string;
  /** `retry:` of this block (ms), when it had one. */
  retry?: number;
}

/**
 * An incremental Server-Sent Events parser (https://html.spec.whatwg.org/multipage/server-sent-events.html):
 * feed it the body's chunks as they come; it returns the blocks each chunk completes. UTF-8
 * split across chunks, CRLF / LF / CR line ends (a CR at a chunk's end and the LF that starts
 * the next are one line end), a leading BOM, comments (`:` lines, the heartbeats), multi-line
 * `data:`, `id:` (ignored when it holds a NUL) and `retry:` (digits only) are handled; a block
 * the body ends in the middle of is dropped, as the spec says.
 */
export class SSEDecoder {
  /** The last event id buffer: set by `id:`, kept across blocks. */
  lastEventId = '';
  /** The latest `retry:` (ms), or null. */
  retry: number | null = null;
  private readonly text = new TextDecoder('utf-8');
  private buffer = '';
  private afterCR = false;
  private begun = false;
  private event = '';
  private data: string[] = [];
  private touched = false;
  private blockRetry: number | undefined = undefined;

  /** The blocks completed by this chunk (bytes, or text already decoded). */
  decode(chunk: Uint8Array | string): SSEMessage[] {
    const text = typeof chunk === 'string' ? chunk : this.text.decode(chunk, { stream: true });
    return this.lines(text);
  }

  /** The body ended: what the decoder still held (an unfinished block is discarded). */
  end(): SSEMessage[] {
    const out = this.lines(this.text.decode());
    this.buffer = '';
    this.resetBlock();
    return out;
  }

  private lines(text: string): SSEMessage[] {
    const out: SSEMessage[] = [];
    let s = this.buffer + text;
    if (!this.begun && s !== '') {
      this.begun = true;
      if (s.charCodeAt(0) === 0xfeff) s = s.slice(1); // a BOM opens the stream at most
    }
    let start = 0;
    if (this.afterCR && s.startsWith('\n')) start = 1;
    this.afterCR = false;
    for (let i = start; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      const message = this.line(s.slice(start, i));
      if (message) out.push(message);
      if (c === 13) {
        if (i + 1 === s.length) this.afterCR = true; // the LF may start the next chunk
        else if (s.charCodeAt(i + 1) === 10) i++;
      }
      start = i + 1;
    }
    s = s.slice(start);
    this.buffer = s;
    return out;
  }

  private line(line: string): SSEMessage | null {
    if (line === '') return this.dispatch();
    if (line.startsWith(':')) return null; // a comment: heartbeats, the goodbye note
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'event':
        this.event = value;
        break;
      case 'data':
        this.data.push(value);
        break;
      case 'id':
        if (value.includes('\u0000')) return null;
        this.lastEventId = value;
        break;
      case 'retry':
        if (!/^[0-9]+$/.test(value)) return null;
        this.retry = Number(value);
        this.blockRetry = this.retry;
        break;
      default:
        return null; // unknown fields are ignored
    }
    this.touched = true;
    return null;
  }

  private dispatch(): SSEMessage | null {
    if (!this.touched) return null;
    const message: SSEMessage = { id: this.lastEventId, event: this.event, data: this.data.join('\n') };
    if (this.blockRetry !== undefined) message.retry = this.blockRetry;
    this.resetBlock();
    return message;
  }

  private resetBlock(): void {
    this.event = '';
    this.data = [];
    this.touched = false;
    this.blockRetry = undefined;
  }
}

// ----------------------------------------------------------------- the stream

/** One event: `data` is the webhook payload (version 2026-12-01) exactly as sent, JSON text. */
export class StreamEvent {
  constructor(
    readonly id: string,
    readonly type: string,
    readonly data: string,
  ) {}

  /** The payload, parsed: `{ id, type, created_at, data: {...} }`. */
  json<T = any>(): T {
    return JSON.parse(this.data) as T;
  }
}

export interface EventStreamOptions {
  /** Catalog types or patterns (`email.*`); default: every type the key may read. */
  types?: string | string[] | null;
  /** Only events of these campaigns (as webhook endpoint filters). */
  campaignIds?: string | string[] | null;
  /** Only events of contacts with one of these tags. */
  contactTags?: string | string[] | null;
  /** Resume after this event (a 409 `event_stream_cursor_expired` ConflictError when it is
   * older than the stream keeps: 24 h at least). */
  lastEventId?: string | null;
  /** Reconnect after a server end, a dropped connection, a 429 or a 5xx (default true; the
   * server's `Retry-After` is waited, however long). false: one connection, opened with the
   * retries of any call (`maxRetries`, a `Retry-After` of at most a minute); the iteration
   * ends when the server ends it, and a later failure surfaces. */
  reconnect?: boolean;
  /** Milliseconds without a byte (heartbeats included) after which the connection is taken
   * for dead and replaced; default 60 000. */
  readTimeout?: number;
  /** Called on every (re)connection, once the server has accepted it. */
  onConnect?: () => void;
  /** Called before each reconnection: why, and how long it waits first (ms). */
  onReconnect?: (reason: string, delay: number) => void;
  /** Aborting it ends the iteration (quietly) and closes the connection. */
  signal?: AbortSignal;
  /** Extra request headers. */
  headers?: Record<string, string>;
}

function csv(values: string | string[] | null | undefined): string | undefined {
  if (values === null || values === undefined) return undefined;
  const joined = (typeof values === 'string' ? [values] : values).filter((v) => v).join(',');
  return joined || undefined;
}

/** How a connection attempt ended, when it did not end well. */
class Lost extends Error {
  constructor(
    message: string,
    readonly timedOut: boolean,
    readonly origin: unknown,
  ) {
    super(message);
  }
}

/**
 * Iterate it (`for await`) to receive events, live, for as long as you iterate; `break` (or
 * the `signal`) closes the connection. `lastEventId` is the resume point: the last event your
 * loop finished with (it asked for the next one), or the stream head before any event; pass it
 * to a later `client.events.stream({ lastEventId })` to miss nothing and repeat nothing.
 */
export class EventStream implements AsyncIterable<StreamEvent> {
  /** Where a reconnection (or a later stream) resumes: after this event. */
  lastEventId: string | null;
  /** Connections the server accepted so far. */
  connections = 0;
  readonly reconnect: boolean;
  readonly readTimeout: number;
  private readonly query: Record<string, string | undefined>;
  private failures = 0;
  private openRetries = 0;
  private iterating = false;

  constructor(
    private readonly core: Transport,
    private readonly options: EventStreamOptions = {},
  ) {
    this.query = {
      types: csv(options.types),
      campaign_ids: csv(options.campaignIds),
      contact_tags: csv(options.contactTags),
    };
    this.lastEventId = options.lastEventId || null;
    this.reconnect = options.reconnect ?? true;
    this.readTimeout = options.readTimeout ?? DEFAULT_READ_TIMEOUT;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<StreamEvent> {
    if (this.iterating) throw new PenguinMailsError('This event stream is already being iterated');
    this.iterating = true;
    try {
      for (;;) {
        if (this.aborted()) return;
        const started = Date.now();
        let error: unknown = null;
        try {
          yield* this.connectOnce();
        } catch (exc) {
          if (this.aborted()) return;
          error = exc;
        }
        if (this.aborted()) return;
        const wait = this.after(started, error);
        if (wait === null) return;
        if (wait > 0 && !(await this.sleep(wait))) return;
      }
    } finally {
      this.iterating = false;
    }
  }

  private aborted(): boolean {
    return this.options.signal?.aborted ?? false;
  }

  /** One connection: its events until the server ends it (return) or it breaks (throw). */
  private async *connectOnce(): AsyncGenerator<StreamEvent> {
    const { url, headers } = this.core.prepare({ method: 'GET', path: STREAM_PATH, query: this.query });
    Object.assign(headers, { Accept: 'text/event-stream', 'Cache-Control': 'no-store' }, this.options.headers);
    if (this.lastEventId) headers['Last-Event-ID'] = this.lastEventId;

    const controller = new AbortController();
    const signal = this.options.signal;
    const onAbort = () => controller.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    let timer: ReturnType<typeof setTimeout> | undefined;
    let timedOut: string | null = null;
    const arm = (ms: number, what: string) => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        timedOut = `${what} timed out after ${ms} ms`;
        controller.abort();
      }, ms);
    };
    const lost = (cause: unknown): Lost =>
      new Lost(timedOut ?? (cause as Error)?.message ?? String(cause), timedOut !== null, cause);

    let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
    try {
      let response: Response;
      arm(this.core.timeout, 'connect');
      try {
        response = await this.core.fetchImpl(url, { method: 'GET', headers, signal: controller.signal });
      } catch (cause) {
        throw lost(cause);
      }
      if (response.status !== 200) {
        let text = '';
        try {
          text = await response.text();
        } catch (cause) {
          throw lost(cause);
        }
        let body: unknown = text;
        try {
          body = text ? JSON.parse(text) : null;
        } catch {
          // not JSON: kept as text
        }
        throw errorFor(response.status, body, response.headers, parseRetryAfter(response.headers));
      }
      clearTimeout(timer);
      if (!response.body) throw new Lost('the answer has no body', false, null);
      reader = response.body.getReader();
      this.connected();
      const decoder = new SSEDecoder();
      for (;;) {
        arm(this.readTimeout, 'read');
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await reader.read();
        } catch (cause) {
          throw lost(cause);
        }
        clearTimeout(timer);
        const messages = chunk.done ? decoder.end() : decoder.decode(chunk.value);
        for (const message of messages) {
          const event = this.event(message);
          if (event) {
            yield event;
            // Asked for the next one: the loop is done with this event, the resume point
            // moves past it (an interrupted loop resumes at this event).
            this.lastEventId = event.id || this.lastEventId;
            this.failures = 0;
          }
        }
        if (chunk.done) return;
      }
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      if (reader) reader.cancel().catch(() => undefined);
      controller.abort();
    }
  }

  private connected(): void {
    this.connections += 1;
    this.options.onConnect?.();
  }

  private event(message: SSEMessage): StreamEvent | null {
    if (message.event && message.data) return new StreamEvent(message.id, message.event, message.data);
    // The opening frame names the stream head: a cursor before any event.
    if (message.id && !this.lastEventId) this.lastEventId = message.id;
    return null;
  }

  /** Whether a failure may be followed by another attempt: always when reconnecting; else only
   * while opening the one connection, as any call is retried (`maxRetries` times, and not for
   * a `Retry-After` beyond a minute). */
  private mayRetry(retryAfter: number | null = null): boolean {
    if (this.reconnect) return true;
    if (this.connections > 0 || this.openRetries >= this.core.maxRetries) return false;
    if (retryAfter !== null && retryAfter > MAX_RETRY_AFTER_MS) return false;
    this.openRetries += 1;
    return true;
  }

  /** How long to wait (ms) before reconnecting; null: stop. Throws what must surface. */
  private after(started: number, exc: unknown): number | null {
    let wait: number;
    let reason: string;
    if (exc instanceof PenguinMailsError) {
      let retryAfter = exc instanceof RateLimitError ? exc.retryAfter : null;
      if (retryAfter === null && exc.headers) retryAfter = parseRetryAfter(exc.headers); // a 503's
      if (!(exc.status !== undefined && retryable(exc.status) && this.mayRetry(retryAfter))) throw exc;
      // Reconnecting, the server's Retry-After is waited however long (onReconnect says how long).
      wait = retryAfter ?? backoff(this.failures);
      reason = exc.message;
    } else if (exc instanceof Lost) {
      if (!this.mayRetry()) {
        const ErrorClass = exc.timedOut ? APITimeoutError : APIConnectionError;
        throw new ErrorClass(`Event stream: ${exc.message}`, {
          code: exc.timedOut ? 'timeout' : 'connection_error',
          cause: exc.origin,
        });
      }
      wait = backoff(this.failures);
      reason = `connection lost (${exc.message})`;
    } else if (exc !== null) {
      throw exc; // a bug, or the callbacks' own errors
    } else {
      if (!this.reconnect) return null;
      reason = 'the server ended the stream';
      // Ended at once, again and again: back off rather than spin.
      wait = Date.now() - started < 1000 ? backoff(this.failures) : 0;
    }
    if (wait) this.failures += 1;
    this.options.onReconnect?.(reason, wait);
    return wait;
  }

  /** Waits, unless the signal aborts first (false). */
  private sleep(ms: number): Promise<boolean> {
    const signal = this.options.signal;
    if (signal?.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        resolve(ok);
      };
      const onAbort = () => done(false);
      const timer = setTimeout(() => done(true), ms);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}

/** `client.events`: the catalog, test triggers and the live stream. */
export class EventsResource extends Events {
  /** Live events (GET /api/v1/events/stream): `for await` the answer; it reconnects with
   * Last-Event-ID by itself, so nothing is missed or repeated. */
  stream(options: EventStreamOptions = {}): EventStream {
    return new EventStream(this.core, options);
  }
}
