import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';

/** The machine's Redis (or TEST_REDIS_URL) with a random key prefix per test file. */
export function testRedis(): { url: string; prefix: string; client: Redis; cleanup(): Promise<void> } {
  const url = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
  const prefix = `test:${randomBytes(4).toString('hex')}:`;
  const client = new Redis(url, { lazyConnect: false, maxRetriesPerRequest: 2 });
  return {
    url,
    prefix,
    client,
    cleanup: async () => {
      const keys = await client.keys(`${prefix}*`);
      if (keys.length > 0) await client.del(...keys);
      client.disconnect();
    },
  };
}
