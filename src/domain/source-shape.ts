/**
 * The shape of the user's source tables, discovered from the Postgres catalog at start
 * (not assumed): which tables, which column joins events to content, and the SQL types of
 * the keys the pipeline carries through to every destination. Two shapes are common: UUID
 * keys with `content.id` (the default tables `engagement migrate` creates) and integer keys
 * with `content.content_id`. Every destination types its key columns from `keyTypes`, so a
 * key is never cast to a type it does not have.
 *
 * In memory a key is always its text form (`EnrichedEvent.content_id` is a string); each
 * destination's serializer converts it to its own type.
 */

/** The key types accepted for `content_id` and `user_id` (Postgres names, lower case). */
export type KeyType = 'uuid' | 'bigint' | 'integer' | 'text';

/** A table name as the user wrote it: `schema.name` or `name` (search_path: public). */
export interface TableName {
  schema: string;
  name: string;
}

/** What a destination needs to type its columns; equal shapes give equal DDL. */
export interface KeyTypes {
  content_id: KeyType;
  user_id: KeyType;
}

export interface SourceShape {
  events: TableName;
  content: TableName;
  /** The events table's primary key column (an integer: it orders and dedupes events). */
  eventIdColumn: string;
  /** The content table's primary-key column that `events.content_id` refers to (CONTENT_KEY overrides). */
  contentKey: string;
  keyTypes: KeyTypes;
  /** The SQL type of `contentKey` (lookups bind ids as this type); absent: `keyTypes.content_id`. */
  contentKeyType?: KeyType;
  /**
   * Optional columns the tables lack (read as NULL): e.g. `device`, `raw_payload`, `slug`.
   * Absent: the tables have every column.
   */
  absent?: { events: readonly string[]; content: readonly string[] };
}

/** The default tables (`engagement migrate` creates them when none exist). */
export const DEFAULT_SHAPE: SourceShape = {
  events: { schema: 'public', name: 'engagement_events' },
  content: { schema: 'public', name: 'content' },
  eventIdColumn: 'id',
  contentKey: 'id',
  keyTypes: { content_id: 'uuid', user_id: 'uuid' },
};

/** `"schema"."name"`, quoted for SQL. */
export function qualifiedName(table: TableName): string {
  return `${quoteIdent(table.schema)}.${quoteIdent(table.name)}`;
}

/** A Postgres identifier, quoted (names are taken exactly as written, case included). */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** The SQL for one column of a shape's table: the column, or NULL when the table lacks it. */
export function columnOrNull(
  shape: SourceShape,
  table: 'events' | 'content',
  column: string,
  alias = '',
): string {
  const absent = shape.absent?.[table] ?? [];
  return absent.includes(column) ? 'NULL' : `${alias}${quoteIdent(column)}`;
}

/** `EVENTS_TABLE` / `CONTENT_TABLE` text (`schema.name` or `name`) -> parts; null: unqualified schema. */
export function parseTableName(text: string): { schema: string | null; name: string } {
  const dot = text.indexOf('.');
  return dot < 0 ? { schema: null, name: text } : { schema: text.slice(0, dot), name: text.slice(dot + 1) };
}
