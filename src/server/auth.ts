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

/** Routes open without the token: liveness, readiness and the page shell (it holds no data). */
const OPEN_ROUTES = new Set(['/healthz', '/readyz', '/']);

/**
 * Whether a request needs the token when one is set, decided on the route the router matched
 * (`request.routeOptions.url`), never on the raw request target: `/%61pi/stats` or an
 * absolute-form target (`GET http://host/api/stats`) reach the same handlers as `/api/stats`.
 * Everything not known to be open needs it, unmatched paths too.
 */
export function needsToken(matchedRoute: string | undefined): boolean {
  return matchedRoute === undefined || !OPEN_ROUTES.has(matchedRoute);
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}
