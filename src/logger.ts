import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * The application logger: JSON lines on stderr (stdout stays for command output).
 * Known secret-bearing fields are redacted; URLs are logged through redactSecrets().
 */
export function createLogger(level = process.env.LOG_LEVEL ?? 'info'): Logger {
  return pino(
    {
      level,
      base: { service: 'engagement' },
      redact: {
        paths: ['password', '*.password', 'secret', '*.secret', 'token', '*.token', 'headers.authorization'],
        censor: '[redacted]',
      },
    },
    pino.destination({ fd: 2, sync: true }),
  );
}

/** A logger that discards everything (tests and library use). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
