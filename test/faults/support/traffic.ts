import pg from 'pg';
import { clientConfig } from '../../../src/db/postgres.js';
import { CONTENT_IDS } from '../../helpers/pipeline.js';

export interface Traffic {
  /** Transactions that failed (the database was down): their rows may or may not exist. */
  readonly failures: number;
  /** Rows in transactions whose COMMIT was acknowledged. */
  readonly committed: number;
  stop(): Promise<void>;
}

/**
 * Small INSERT transactions (10-60 rows by default, event_ts spread over the last 5 minutes) every
 * `everyMs` until stopped, from its own connection straight to the database. Survives the
 * database going away: a failed transaction is counted and retried on a new connection.
 * The source table, not this counter, is the truth the reconciliation compares against
 * (a COMMIT cut by a restart may have happened or not).
 */
export function startTraffic(
  databaseUrl: string,
  everyMs = 20,
  /** Rows per transaction, [min, max] (default 10-60; OLTP-shaped traffic: [1, 5]). */
  rows: [number, number] = [10, 60],
): Traffic {
  let running = true;
  let failures = 0;
  let committed = 0;
  let client: pg.Client | null = null;
  const loop = (async () => {
    while (running) {
      try {
        if (!client) {
          client = new pg.Client(clientConfig(databaseUrl, 'fault-traffic'));
          client.on('error', () => undefined);
          await client.connect();
        }
        const n = rows[0] + Math.floor(Math.random() * (rows[1] - rows[0] + 1));
        await client.query(
          `INSERT INTO engagement_events (content_id, user_id, event_type, event_ts, duration_ms, device, raw_payload)
           SELECT ($1::uuid[])[1 + floor(random() * 3)::int], gen_random_uuid(),
                  (ARRAY['play','pause','finish','click'])[1 + floor(random() * 4)::int],
                  now() - make_interval(secs => random() * 300), floor(random() * 600000)::int,
                  (ARRAY['ios','android','web','tv'])[1 + floor(random() * 4)::int], jsonb_build_object('g', g)
           FROM generate_series(1, $2::int) g`,
          [CONTENT_IDS, n],
        );
        committed += n;
      } catch {
        failures += 1;
        await client?.end().catch(() => undefined);
        client = null;
        await new Promise((r) => setTimeout(r, 200));
      }
      await new Promise((r) => setTimeout(r, everyMs));
    }
    await client?.end().catch(() => undefined);
  })();
  return {
    get failures() {
      return failures;
    },
    get committed() {
      return committed;
    },
    stop: async () => {
      running = false;
      await loop;
    },
  };
}
