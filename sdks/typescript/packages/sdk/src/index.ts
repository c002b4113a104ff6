/** @penguinmails/sdk: the official JavaScript / TypeScript client of the PenguinMails API. */

import { type ClientOptions, Transport } from './core.js';
import { APIResources } from './generated/resources.js';

export class PenguinMails extends APIResources {
  /** The transport: credentials, base URL, retries and timeout in force. */
  readonly core: Transport;

  constructor(options: ClientOptions = {}) {
    const core = new Transport(options);
    super(core);
    this.core = core;
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
export * from './generated/resources.js';
export type * from './generated/types.js';
