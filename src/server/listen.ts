import type { FastifyInstance } from 'fastify';
import { isLoopback } from '../config.js';
import { isPortFree } from '../ports.js';
import { configError } from '../errors.js';

/**
 * A port in use is configuration: the one line and exit 2 of every command that listens
 * (`run`, `demo`, `mock-external`); other listen errors are returned as they are.
 */
export function listenFailure(err: unknown, host: string, port: number, hint: string): unknown {
  const code = (err as { code?: string }).code;
  if (code === 'ENOTFOUND' || code === 'EADDRNOTAVAIL' || code === 'EAI_AGAIN')
    return configError(
      `cannot listen on ${host} (${code}): not an address of this machine, or a name that does not resolve`,
      'set HOST / --host to one of its addresses, e.g. 127.0.0.1 or ::1',
    );
  if (code !== 'EADDRINUSE') return err;
  return configError(`port ${port} on ${host} is already in use`, hint);
}

/**
 * A busy PORT found before anything is opened (a loopback HOST, which the check can probe): the
 * same one line, exit 2, as listenFailure, with nothing left running. `run` and `work`.
 */
export async function assertPortFree(
  host: string,
  port: number,
  hint = 'set PORT / --port (0 = any free port)',
): Promise<void> {
  if (isLoopback(host) && !(await isPortFree(port)))
    throw configError(`port ${port} on ${host} is already in use`, hint);
}

/** Starts a built app; binds loopback unless told otherwise. Returns the URL to print. */
export async function startServer(
  app: FastifyInstance,
  options: { host?: string; port?: number } = {},
): Promise<{ url: string; port: number; close(): Promise<void> }> {
  const host = options.host ?? '127.0.0.1';
  try {
    await app.listen({ host, port: options.port ?? 8787 });
  } catch (err) {
    throw listenFailure(err, host, options.port ?? 8787, 'set PORT / --port (0 = any free port)');
  }
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : (options.port ?? 0);
  // A wildcard bind is reachable on loopback; print that rather than 0.0.0.0.
  const shown = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  return { url: `http://${shown}:${port}/`, port, close: () => app.close() };
}
