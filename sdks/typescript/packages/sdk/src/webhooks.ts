/** Standard Webhooks verification (`webhook-id`, `webhook-timestamp`, `webhook-signature`). */

import { WebhookVerificationError } from './errors.js';

export type WebhookHeaders =
  | Headers
  | Record<string, string | string[] | undefined>;

const encoder = new TextEncoder();

function header(headers: WebhookHeaders, name: string): string | undefined {
  if (typeof (headers as Headers).get === 'function') return (headers as Headers).get(name) ?? undefined;
  for (const [k, v] of Object.entries(headers as Record<string, string | string[] | undefined>)) {
    if (k.toLowerCase() === name) return Array.isArray(v) ? v[0] : v;
  }
  return undefined;
}

function fromBase64(text: string): Uint8Array {
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function toBase64(bytes: Uint8Array): string {
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

/** The HMAC key of a secret: `whsec_<base64>` decoded, or a raw printable secret's UTF-8 bytes. */
export function secretKey(secret: string): Uint8Array {
  if (secret.startsWith('whsec_')) {
    try {
      return fromBase64(secret.slice('whsec_'.length));
    } catch {
      throw new WebhookVerificationError('Malformed whsec_ secret', { code: 'invalid_secret' });
    }
  }
  if (secret.length < 16 || secret.length > 128 || !/^[\x21-\x7e]+$/.test(secret)) {
    throw new WebhookVerificationError('A raw secret is 16-128 printable characters', {
      code: 'invalid_secret',
    });
  }
  return encoder.encode(secret);
}

async function subtle(): Promise<SubtleCrypto> {
  const c = (globalThis as any).crypto;
  if (c?.subtle) return c.subtle;
  // Node 18 without the global: the same Web Crypto from node:crypto.
  const name = 'node:crypto'; // a variable: browser bundlers must not try to inline it
  const mod: any = await import(name);
  return mod.webcrypto.subtle;
}

function equal(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/** Sign `{id}.{timestamp}.{payload}`: the `v1,<base64>` value of `webhook-signature`. */
export async function signWebhook(id: string, timestamp: number, payload: string | Uint8Array, secret: string): Promise<string> {
  const s = await subtle();
  const key = await s.importKey('raw', secretKey(secret) as BufferSource, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  const body = typeof payload === 'string' ? encoder.encode(payload) : payload;
  const prefix = encoder.encode(`${id}.${timestamp}.`);
  const message = new Uint8Array(prefix.length + body.length);
  message.set(prefix);
  message.set(body, prefix.length);
  const mac = new Uint8Array(await s.sign('HMAC', key, message as BufferSource));
  return `v1,${toBase64(mac)}`;
}

/**
 * Verify a delivery and return its parsed JSON payload. Pass the raw body exactly as received.
 * Throws WebhookVerificationError when a header is missing, the timestamp is more than
 * `toleranceSeconds` (default 300) away from now, or no signature matches.
 */
export async function verifyWebhook(
  payload: string | Uint8Array,
  headers: WebhookHeaders,
  secret: string,
  toleranceSeconds = 300,
): Promise<any> {
  const id = header(headers, 'webhook-id');
  const ts = header(headers, 'webhook-timestamp');
  const sigs = header(headers, 'webhook-signature');
  if (!id || !ts || !sigs) {
    throw new WebhookVerificationError('Missing webhook-id, webhook-timestamp or webhook-signature', {
      code: 'missing_headers',
    });
  }
  const timestamp = Number(ts);
  if (!Number.isInteger(timestamp)) throw new WebhookVerificationError('Bad webhook-timestamp', { code: 'bad_timestamp' });
  const now = Math.floor(Date.now() / 1000);
  if (Math.abs(now - timestamp) > toleranceSeconds) {
    throw new WebhookVerificationError('webhook-timestamp outside the tolerance', { code: 'timestamp_out_of_range' });
  }
  const expected = (await signWebhook(id, timestamp, payload, secret)).slice(3);
  const ok = sigs.split(' ').some((part) => {
    const [version, sig] = part.split(',', 2);
    return version === 'v1' && sig !== undefined && equal(sig, expected);
  });
  if (!ok) throw new WebhookVerificationError('No matching signature', { code: 'bad_signature' });
  const text = typeof payload === 'string' ? payload : new TextDecoder().decode(payload);
  return JSON.parse(text);
}
