import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * Bearer-token check for the API. Compares SHA-256 digests in constant time, so neither the
 * token's content nor its length leaks through timing. The token itself is never logged.
 */
export function bearerChecker(token: string): (authorization: string | undefined) => boolean {
  const expected = digest(token);
  return (authorization) => {
    const m = /^Bearer\s+(.+)$/i.exec(authorization ?? '');
    return m !== null && timingSafeEqual(digest(m[1].trim()), expected);
  };
}

/** Paths that need the token when one is set: the data and the metrics, not liveness or the page shell. */
export function isProtectedPath(url: string): boolean {
  const path = url.split('?')[0];
  return path === '/metrics' || path === '/api' || path.startsWith('/api/');
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}
