import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Request signing for the external system (README, "The external system contract"): `X-Signature: sha256=<hex>` where
 * hex is HMAC-SHA256(secret, exact body bytes). The receiver must hash the raw bytes it got,
 * not a re-serialization of the parsed JSON (key order and number formatting would differ).
 */

export const SIGNATURE_HEADER = 'x-signature';
const PREFIX = 'sha256=';

export function signBody(body: string | Uint8Array, secret: string): string {
  return PREFIX + createHmac('sha256', secret).update(body).digest('hex');
}

/** Constant-time check of a received X-Signature header against the raw body. */
export function verifySignature(
  body: string | Uint8Array,
  secret: string,
  header: string | string[] | undefined,
): boolean {
  const received = Array.isArray(header) ? header[0] : header;
  if (typeof received !== 'string' || !received.startsWith(PREFIX)) return false;
  const hex = received.slice(PREFIX.length);
  if (!/^[0-9a-f]{64}$/i.test(hex)) return false;
  const expected = createHmac('sha256', secret).update(body).digest();
  // Both are 32 bytes here (the regex fixed the length), as timingSafeEqual requires.
  return timingSafeEqual(expected, Buffer.from(hex, 'hex'));
}
