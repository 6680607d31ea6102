import type pg from 'pg';
import {
  DEFAULT_SHAPE,
  parseTableName,
  qualifiedName,
  quoteIdent,
  type KeyType,
  type SourceShape,
  type TableName,
} from '../domain/source-shape.js';
import { ErrorCodes, PipelineError } from '../errors.js';

export interface ShapeSettings {
  /** EVENTS_TABLE: `schema.name` or `name` (resolved through the search_path). */
  eventsTable?: string;
  /** CONTENT_TABLE, likewise. */
  contentTable?: string;
  /** CONTENT_KEY: the content column `events.content_id` refers to (default: the content table's primary key). */
  contentKey?: string;
}

/** Columns the pipeline reads; the others are ignored. Optional ones are read as NULL when absent. */
const EVENT_COLUMNS = {
  required: ['content_id', 'event_ts', 'duration_ms'],
  optional: ['user_id', 'event_type', 'device', 'raw_payload'],
} as const;
const CONTENT_COLUMNS = {
  required: ['content_type', 'length_seconds'],
  optional: ['slug', 'title'],
} as const;

const KEY_TYPES: Record<string, KeyType> = {
  uuid: 'uuid',
  int8: 'bigint',
  int4: 'integer',
  int2: 'integer',
  text: 'text',
  varchar: 'text',
  bpchar: 'text',
};
const INTEGER_TYPES = ['int2', 'int4', 'int8'];
const TIMESTAMP_TYPES = ['timestamptz', 'timestamp'];

type Queryable = Pick<pg.Pool, 'query'> | Pick<pg.Client, 'query'>;

export interface CatalogColumn {
  name: string;
  /** The base type's name (domains resolved), e.g. int8, uuid, timestamptz. */
  type: string;
  /** As the catalog spells it, for messages and casts (e.g. `numeric(10,2)`). */
  display: string;
  pk: boolean;
  notNull: boolean;
  /** Filled by Postgres when an INSERT leaves it out: a DEFAULT, an identity or a generated column. */
  defaulted: boolean;
  /** GENERATED ... AS (expr) STORED: no value can be written to it. */
  generated: boolean;
  /** GENERATED ALWAYS AS IDENTITY: an explicit value needs OVERRIDING SYSTEM VALUE. */
  identityAlways: boolean;
}
type Column = CatalogColumn;

interface Table {
  name: TableName;
  columns: Map<string, Column>;
  primaryKey: string[];
}

/** Whether `EVENTS_TABLE` / `CONTENT_TABLE` exist (migrate creates the default tables only when neither does). */
export async function sourceTablesExist(
  db: Queryable,
  settings: ShapeSettings = {},
): Promise<{ events: boolean; content: boolean }> {
  const [events, content] = await Promise.all([
    readTable(db, settings.eventsTable ?? DEFAULT_SHAPE.events.name),
    readTable(db, settings.contentTable ?? DEFAULT_SHAPE.content.name),
  ]);
  return { events: events !== null, content: content !== null };
}

/**
 * Reads the shape of the user's tables from the catalog (see SourceShape). What does not fit
 * is one line naming the table, the column and what is accepted (EP_ERR_SOURCE_SHAPE); a
 * missing table is EP_ERR_SOURCE_TABLE_MISSING. Columns the pipeline does not read are ignored.
 */
export async function discoverShape(db: Queryable, settings: ShapeSettings = {}): Promise<SourceShape> {
  const eventsText = settings.eventsTable ?? DEFAULT_SHAPE.events.name;
  const contentText = settings.contentTable ?? DEFAULT_SHAPE.content.name;
  const [events, content] = await Promise.all([readTable(db, eventsText), readTable(db, contentText)]);
  if (!events || !content) {
    const missing = [!events && `events table ${eventsText}`, !content && `content table ${contentText}`]
      .filter(Boolean)
      .join(' and ');
    throw new PipelineError(
      ErrorCodes.SOURCE_TABLE_MISSING,
      `${missing} not found (or not visible to this role)`,
      'config',
      'set EVENTS_TABLE / CONTENT_TABLE (schema.name allowed) to your tables, or run `engagement migrate` to create the default ones',
    );
  }
  const e = display(events.name);
  const c = display(content.name);

  for (const column of EVENT_COLUMNS.required) need(events, column, e);
  for (const column of CONTENT_COLUMNS.required) need(content, column, c);

  const eventIdColumn =
    events.primaryKey.length === 1 ? events.primaryKey[0] : events.columns.has('id') ? 'id' : null;
  if (eventIdColumn === null) {
    throw shapeError(
      `${e} has no single-column primary key (and no id column): the pipeline needs one integer id per event (it orders and dedupes events)`,
      `add one, e.g. ALTER TABLE ${e} ADD COLUMN id BIGSERIAL PRIMARY KEY`,
    );
  }
  expectType(events, eventIdColumn, INTEGER_TYPES, 'an integer (smallint, integer or bigint)', e);

  const contentKey = settings.contentKey ?? (content.primaryKey.length === 1 ? content.primaryKey[0] : null);
  if (contentKey === null) {
    throw shapeError(
      `${c} has no single-column primary key, so the column events.content_id joins is unknown`,
      'set CONTENT_KEY to that column',
    );
  }
  if (!content.columns.has(contentKey)) {
    throw shapeError(
      `CONTENT_KEY ${contentKey}: ${c} has no column ${contentKey}`,
      `set CONTENT_KEY to one of ${[...content.columns.keys()].join(', ')}`,
    );
  }

  const contentKeyType = keyType(content, contentKey, c);
  const eventsContentType = keyType(events, 'content_id', e);
  const userType = events.columns.has('user_id') ? keyType(events, 'user_id', e) : 'text';
  expectType(events, 'event_ts', TIMESTAMP_TYPES, 'timestamptz or timestamp', e);
  expectType(events, 'duration_ms', INTEGER_TYPES, 'an integer (milliseconds)', e);
  expectType(content, 'length_seconds', INTEGER_TYPES, 'an integer (seconds)', c);

  return {
    events: events.name,
    content: content.name,
    eventIdColumn,
    contentKey,
    keyTypes: { content_id: joinedKeyType(eventsContentType, contentKeyType), user_id: userType },
    contentKeyType,
    absent: {
      events: EVENT_COLUMNS.optional.filter((col) => !events.columns.has(col)),
      content: CONTENT_COLUMNS.optional.filter((col) => !content.columns.has(col)),
    },
  };
}

/**
 * The type destinations give content_id: the two sides' type when they agree, bigint for two
 * integer types, else text (every value of either side is exact as text).
 */
function joinedKeyType(events: KeyType, content: KeyType): KeyType {
  if (events === content) return events;
  const integers: KeyType[] = ['bigint', 'integer'];
  if (integers.includes(events) && integers.includes(content)) return 'bigint';
  return 'text';
}

/**
 * Every column of a table the shape names (`engagement generate` must know which ones it has
 * to fill and which Postgres fills); the table is known to exist, so none is an empty list.
 */
export async function readColumns(db: Queryable, table: TableName): Promise<CatalogColumn[]> {
  const read = await readRelation(db, qualifiedName(table));
  return read === null ? [] : [...read.columns.values()];
}

async function readTable(db: Queryable, text: string): Promise<Table | null> {
  const { schema, name } = parseTableName(text);
  return readRelation(db, schema === null ? quoteIdent(name) : `${quoteIdent(schema)}.${quoteIdent(name)}`);
}

async function readRelation(db: Queryable, regclass: string): Promise<Table | null> {
  const { rows } = await db.query<{
    schema: string;
    table: string;
    column: string | null;
    type: string | null;
    display: string | null;
    pk: boolean | null;
    pk_size: number | null;
    not_null: boolean | null;
    defaulted: boolean | null;
    generated: boolean | null;
    identity_always: boolean | null;
  }>(
    `SELECT n.nspname AS schema, c.relname AS table, a.attname AS column,
            coalesce(b.typname, t.typname) AS type, format_type(a.atttypid, a.atttypmod) AS display,
            a.attnum = ANY(i.indkey) AS pk, i.indnatts::int AS pk_size,
            a.attnotnull AS not_null, a.atthasdef OR a.attidentity <> '' AS defaulted,
            a.attgenerated <> '' AS generated, a.attidentity = 'a' AS identity_always
       FROM pg_class c
       JOIN pg_namespace n ON n.oid = c.relnamespace
       LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
       LEFT JOIN pg_type t ON t.oid = a.atttypid
       LEFT JOIN pg_type b ON b.oid = t.typbasetype AND t.typtype = 'd'
       LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
      WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p')
      ORDER BY a.attnum`,
    [regclass],
  );
  if (rows.length === 0) return null;
  const columns = new Map<string, Column>();
  for (const r of rows) {
    if (r.column === null) continue;
    columns.set(r.column, {
      name: r.column,
      type: r.type ?? '',
      display: r.display ?? '',
      pk: r.pk === true,
      notNull: r.not_null === true,
      defaulted: r.defaulted === true,
      generated: r.generated === true,
      identityAlways: r.identity_always === true,
    });
  }
  const primaryKey = [...columns.values()].filter((col) => col.pk).map((col) => col.name);
  return {
    name: { schema: rows[0].schema, name: rows[0].table },
    columns,
    primaryKey: rows[0].pk_size === primaryKey.length ? primaryKey : [],
  };
}

/** `schema.name` as messages show a table. */
export function display(table: TableName): string {
  return `${table.schema}.${table.name}`;
}

function need(table: Table, column: string, name: string): void {
  if (table.columns.has(column)) return;
  throw shapeError(
    `${name} has no ${column} column, which the pipeline needs`,
    'add the column, or set EVENTS_TABLE / CONTENT_TABLE to tables that have it (other columns are ignored)',
  );
}

function keyType(table: Table, column: string, name: string): KeyType {
  const col = table.columns.get(column)!;
  const type = KEY_TYPES[col.type];
  if (type) return type;
  throw shapeError(
    `${name}.${column} is ${col.display}; key columns must be uuid, bigint, integer or text`,
    `use one of those types for ${name}.${column}`,
  );
}

function expectType(table: Table, column: string, accepted: string[], what: string, name: string): void {
  const col = table.columns.get(column)!;
  if (accepted.includes(col.type)) return;
  throw shapeError(
    `${name}.${column} is ${col.display}, the pipeline needs ${what}`,
    `change ${column}'s type`,
  );
}

/** A source table that does not fit (EP_ERR_SOURCE_SHAPE): one config line, exit 2. */
export function shapeError(message: string, hint: string): PipelineError {
  return new PipelineError(ErrorCodes.SOURCE_SHAPE, message, 'config', hint);
}

/**
 * A table in a publication that publishes updates and deletes must have a replica identity,
 * or Postgres refuses every UPDATE and DELETE on it ("cannot update table ... because it does
 * not have a replica identity"): publishing a user's table without a primary key (nor
 * REPLICA IDENTITY FULL / USING INDEX) would break the user's own writes. And the content
 * table's identity must carry the join key: a DELETE (or a change of the key) sends only the
 * identity's columns, so with CONTENT_KEY outside them the dimension could not tell which
 * content went away and would go on enriching with the deleted or renamed row. Checked before
 * the tables are published and at start; the table is never altered for the user.
 */
export async function assertReplicaIdentity(db: Queryable, shape: SourceShape): Promise<void> {
  for (const table of [shape.content, shape.events]) {
    const regclass = `${quoteIdent(table.schema)}.${quoteIdent(table.name)}`;
    const { rows } = await db.query<{ ident: string; columns: string[] | null }>(
      `SELECT c.relreplident AS ident,
              (SELECT array_agg(a.attname::text)
                 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                WHERE i.indrelid = c.oid
                  AND CASE c.relreplident WHEN 'd' THEN i.indisprimary WHEN 'i' THEN i.indisreplident ELSE false END
              ) AS columns
         FROM pg_class c WHERE c.oid = to_regclass($1)`,
      [regclass],
    );
    const row = rows[0];
    if (!row || row.ident === 'f') continue;
    const name = display(table);
    const fix = `ALTER TABLE ${regclass} REPLICA IDENTITY FULL`;
    if (row.columns === null || row.ident === 'n') {
      throw shapeError(
        `${name} has no replica identity (no primary key${row.ident === 'n' ? ', REPLICA IDENTITY NOTHING' : ''}): once published for replication, Postgres would refuse every UPDATE and DELETE on it`,
        `${fix} (or add a primary key), then rerun the command`,
      );
    }
    if (table === shape.content && !row.columns.includes(shape.contentKey)) {
      throw shapeError(
        `${name}'s replica identity (${row.columns.join(', ')}) does not include CONTENT_KEY ${shape.contentKey}: a deleted or re-keyed content row could not be recognised, and events would go on being enriched with it`,
        `${fix} (or REPLICA IDENTITY USING INDEX on a unique, not-null index of ${shape.contentKey}), then rerun the command`,
      );
    }
  }
}

/**
 * A partitioned source table is streamed only through a publication with
 * publish_via_partition_root (`engagement migrate` sets it): otherwise its rows arrive under
 * the partitions' names and would be passed over, so the start refuses instead.
 */
export async function assertPartitionsPublishedAsRoot(
  db: Queryable,
  shape: SourceShape,
  publicationName: string,
): Promise<void> {
  const { rows } = await db.query<{ table: string }>(
    `SELECT c.oid::regclass::text AS table
       FROM pg_class c, pg_publication p
      WHERE c.oid IN (to_regclass($1), to_regclass($2)) AND c.relkind = 'p'
        AND p.pubname = $3 AND NOT p.pubviaroot`,
    [qualifiedName(shape.content), qualifiedName(shape.events), publicationName],
  );
  if (rows.length === 0) return;
  throw shapeError(
    `${rows.map((r) => r.table).join(' and ')} ${rows.length > 1 ? 'are' : 'is'} partitioned and publication ${publicationName} publishes partitions under their own names: their rows would not be recognised`,
    'run `engagement migrate` (it sets publish_via_partition_root on the publication), then `engagement backfill` for rows written before',
  );
}

/** One line for the start-up log: which tables, join and key types were found. */
export function describeShape(shape: SourceShape): string {
  const absent = [...(shape.absent?.events ?? []), ...(shape.absent?.content ?? [])];
  return (
    `source tables ${display(shape.events)} (event id ${shape.eventIdColumn}) and ${display(shape.content)} ` +
    `(joined on content_id = ${shape.contentKey}); keys: content_id ${shape.keyTypes.content_id}, user_id ${shape.keyTypes.user_id}` +
    (absent.length > 0 ? `; absent, read as NULL: ${absent.join(', ')}` : '')
  );
}
