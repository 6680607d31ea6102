import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CatalogColumn } from '../../src/db/catalog.js';
import { DEFAULT_SHAPE, type SourceShape } from '../../src/domain/source-shape.js';
import { describeError } from '../../src/errors.js';
import { buildCatalog } from '../../src/generator/catalog.js';
import { planTarget } from '../../src/generator/target.js';
import { createTraffic } from '../../src/generator/traffic.js';

/** A catalog column as readColumns reports it: `name type` plus flags. */
function col(spec: string, flags: Partial<CatalogColumn> = {}): CatalogColumn {
  const [name, type] = spec.split(' ');
  const display = {
    int2: 'smallint',
    int4: 'integer',
    int8: 'bigint',
    timestamptz: 'timestamp with time zone',
  };
  return {
    name,
    type,
    display: display[type as keyof typeof display] ?? type,
    pk: false,
    notNull: false,
    defaulted: false,
    generated: false,
    identityAlways: false,
    ...flags,
  };
}

const DEFAULT_COLUMNS = {
  content: [
    col('id uuid', { pk: true, notNull: true }),
    col('slug text', { notNull: true }),
    col('title text', { notNull: true }),
    col('content_type text'),
    col('length_seconds int4'),
    col('publish_ts timestamptz', { notNull: true }),
  ],
  events: [
    col('id int8', { pk: true, notNull: true, defaulted: true }),
    col('content_id uuid'),
    col('user_id uuid'),
    col('event_type text'),
    col('event_ts timestamptz', { notNull: true }),
    col('duration_ms int4'),
    col('device text'),
    col('raw_payload jsonb'),
  ],
};

/** Seed 003's tables. */
const SEED_003: SourceShape = {
  ...DEFAULT_SHAPE,
  contentKey: 'content_id',
  keyTypes: { content_id: 'bigint', user_id: 'bigint' },
};
const seed003Columns = (contentKey = 'int8', userId = 'int8') => ({
  content: [
    col(`content_id ${contentKey}`, { pk: true, notNull: true }),
    col('content_type text'),
    col('length_seconds int4'),
  ],
  events: [
    col('id int8', { pk: true, notNull: true, defaulted: true }),
    col('content_id int8'),
    col(`user_id ${userId}`),
    col('event_type text'),
    col('event_ts timestamptz', { defaulted: true }),
    col('duration_ms int4'),
    col('device text'),
    col('raw_payload jsonb'),
  ],
});

const catalog = buildCatalog({ size: 200 });

describe('generate: INSERTs planned from the source shape', () => {
  it('the default tables: the multi-row unnest INSERTs of before, uuid keys as generated', () => {
    const target = planTarget(DEFAULT_SHAPE, DEFAULT_COLUMNS);
    assert.equal(
      target.insertEvents([]).text,
      'INSERT INTO "public"."engagement_events" ("content_id", "user_id", "event_type", "event_ts", "duration_ms", "device", "raw_payload")' +
        ' SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamp with time zone[], $5::integer[], $6::text[], $7::jsonb[])',
    );
    assert.match(
      target.insertContent([]).text,
      /^INSERT INTO "public"."content" \("id", "slug", "title", .*ON CONFLICT DO NOTHING$/,
    );
    assert.deepEqual(
      target.keyed(catalog).map((c) => c.id),
      catalog.map((c) => c.id),
    );
  });

  it('integer keys: the same positive key per item on every run, unique, within the narrower column', () => {
    const target = planTarget(SEED_003, seed003Columns());
    const keys = target.keyed(catalog).map((c) => c.id);
    assert.deepEqual(
      planTarget(SEED_003, seed003Columns())
        .keyed(catalog)
        .map((c) => c.id),
      keys,
    );
    assert.equal(new Set(keys).size, catalog.length);
    for (const k of keys) assert.ok(Number.isSafeInteger(Number(k)) && Number(k) >= 1, k);

    // A smallint content key bounds the keys, even with a bigint events.content_id.
    const small = planTarget(SEED_003, seed003Columns('int2'))
      .keyed(catalog)
      .map((c) => Number(c.id));
    assert.equal(new Set(small).size, catalog.length);
    for (const k of small) assert.ok(k >= 1 && k <= 32_767, String(k));
  });

  it('integer user ids: each uuid of the traffic -> the same integer; logged-out visitors stay NULL', () => {
    const target = planTarget(SEED_003, seed003Columns('int8', 'int4'));
    const traffic = createTraffic({ catalog: target.keyed(catalog), seed: 3 });
    const rows = Array.from({ length: 500 }, (_, i) => traffic.next(Date.UTC(2026, 0, 1) + i * 10));
    const [contentIds, userIds] = target.insertEvents(rows).values as unknown[][];
    for (const id of contentIds) assert.match(String(id), /^[1-9]\d*$/);
    for (const id of userIds)
      if (id !== null) assert.ok(Number(id) >= 1 && Number(id) <= 2_147_483_647, String(id));
    assert.ok(userIds.includes(null));
    assert.deepEqual(target.insertEvents(rows).values[1], userIds);
  });

  it('writes only the columns that exist and can be written', () => {
    const columns = seed003Columns();
    columns.events = columns.events.filter((c) => c.name !== 'device' && c.name !== 'raw_payload');
    columns.content.push(col('slug text', { generated: true, defaulted: true }), col('editor text'));
    const target = planTarget(SEED_003, columns);
    assert.match(
      target.insertEvents([]).text,
      /\("content_id", "user_id", "event_type", "event_ts", "duration_ms"\) /,
    );
    assert.match(target.insertContent([]).text, /\("content_id", "content_type", "length_seconds"\) /);
  });

  it('a CONTENT_KEY generate also knows is written once, as the key; an identity key is overridden', () => {
    const shape = {
      ...DEFAULT_SHAPE,
      contentKey: 'slug',
      keyTypes: { content_id: 'text', user_id: 'uuid' },
    } as const;
    // content.id is no longer the key: it needs a default, as generate does not fill it.
    const columns = {
      content: DEFAULT_COLUMNS.content.map((c) =>
        c.name === 'id' ? { ...c, pk: false, defaulted: true } : c,
      ),
      events: DEFAULT_COLUMNS.events.map((c) => (c.name === 'content_id' ? col('content_id text') : c)),
    };
    assert.match(
      planTarget(shape, columns).insertContent([]).text,
      /\("slug", "title", "content_type", "length_seconds", "publish_ts"\)/,
    );

    const identity = seed003Columns();
    identity.content[0] = col('content_id int8', {
      pk: true,
      notNull: true,
      defaulted: true,
      identityAlways: true,
    });
    assert.match(planTarget(SEED_003, identity).insertContent([]).text, /\) OVERRIDING SYSTEM VALUE SELECT/);
  });

  it('refuses what it cannot fill, in one line naming the column', () => {
    const refuse = (columns: ReturnType<typeof seed003Columns>, pattern: RegExp) =>
      assert.throws(
        () => planTarget(SEED_003, columns),
        (err) => {
          assert.match(describeError(err), pattern);
          assert.equal((err as { kind?: string }).kind, 'config');
          return true;
        },
      );
    const unknown = seed003Columns();
    unknown.events.push(col('tenant text', { notNull: true }));
    refuse(unknown, /^EP_ERR_SOURCE_SHAPE: public\.engagement_events\.tenant is NOT NULL without a default/);

    const noUser = seed003Columns();
    noUser.events[2] = col('user_id int8', { notNull: true });
    refuse(noUser, /public\.engagement_events\.user_id is NOT NULL, but generated traffic leaves it empty/);

    const noId = seed003Columns();
    noId.events[0] = col('id int8', { pk: true, notNull: true });
    refuse(noId, /engagement_events\.id is NOT NULL without a default/);

    refuse(seed003Columns('uuid'), /content_id are uuid and bigint: no generated key fits both/);

    // Postgres fills a NOT NULL column with a default: no refusal.
    const defaulted = seed003Columns();
    defaulted.events.push(col('tenant text', { notNull: true, defaulted: true }));
    planTarget(SEED_003, defaulted);
  });
});
