/** @penguinmails/sdk: the official JavaScript / TypeScript client of the PenguinMails API. */

import { type ClientOptions, Transport } from './core.js';
import { APIResources } from './generated/resources.js';
import { EventsResource } from './stream.js';

export class PenguinMails extends APIResources {
  /** The transport: credentials, base URL, retries and timeout in force. */
  readonly core: Transport;
  /** The event catalog, test triggers and the live stream (`events.stream()`). */
  declare readonly events: EventsResource;

  constructor(options: ClientOptions = {}) {
    const core = new Transport(options);
    super(core);
    this.core = core;
    // The generated `Events` plus the hand-written stream (the generator skips non-JSON answers).
    (this as { events: EventsResource }).events = new EventsResource(core);
  }
}

export default PenguinMails;
export {
  type ClientOptions,
  type RequestOptions,
  type Params,
  type Camelize,
  DEFAULT_BASE_URL,
  VERSION,
  Page,
  PagePromise,
  Transport,
  toSnake,
} from './core.js';
export * from './errors.js';
export { verifyWebhook, signWebhook, type WebhookHeaders } from './webhooks.js';
export {
  DEFAULT_READ_TIMEOUT,
  EventStream,
  EventsResource,
  SSEDecoder,
  StreamEvent,
  type EventStreamOptions,
  type SSEMessage,
} from './stream.js';
export * from './generated/resources.js';
export type * from './generated/types.js';
