import {
  discoverShape,
  display,
  readColumns,
  shapeError,
  type CatalogColumn,
  type ShapeSettings,
} from '../db/catalog.js';
import { qualifiedName, quoteIdent, type SourceShape, type TableName } from '../domain/source-shape.js';
import type { CatalogItem } from './catalog.js';
import type { GeneratedEvent } from './traffic.js';

/**
 * Where `engagement generate` writes: the INSERTs for the user's tables as the catalog
 * describes them (SourceShape plus every column), so generated rows land in the tables the
 * pipeline streams, with keys of the columns' own types and only columns that exist. The
 * values keep the default tables' vocabulary (content types podcast/newsletter/video, event
 * types play/pause/finish/click) so CHECK constraints written for those still hold.
 *
 * Planning is pure (planTarget) so every shape can be tested without a database.
 */
export interface Statement {
  text: string;
  values: unknown[];
}

export interface GeneratorTarget {
  shape: SourceShape;
  /** The catalogue keyed as this shape keys content (`id` becomes the content key's text). */
  keyed(items: readonly CatalogItem[]): CatalogItem[];
  /** Inserts the catalogue where absent; a row already there is never touched. */
  insertContent(items: readonly CatalogItem[]): Statement;
  /** The keys (as text) and content types of the catalogue rows in the table afterwards. */
  selectContent(items: readonly CatalogItem[]): Statement;
  /** One multi-row INSERT of events: one array parameter per column, however many rows. */
  insertEvents(rows: readonly GeneratedEvent[]): Statement;
}

/** Reads the shape (EVENTS_TABLE / CONTENT_TABLE / CONTENT_KEY) and every column of both tables. */
export async function loadTarget(
  db: Parameters<typeof discoverShape>[0],
  settings: ShapeSettings,
): Promise<GeneratorTarget> {
  const shape = await discoverShape(db, settings);
  const [events, content] = await Promise.all([
    readColumns(db, shape.events),
    readColumns(db, shape.content),
  ]);
  return planTarget(shape, { events, content });
}

/** How a key is generated: the uuid itself (uuid, text) or a positive integer up to `max`. */
type KeyForm = { kind: 'uuid' } | { kind: 'integer'; max: number };

/** Largest id per integer type; bigint stays below 2^53 so JSON consumers read it exactly. */
const INTEGER_MAX: Record<string, number> = { int2: 32_767, int4: 2_147_483_647, int8: 2 ** 52 };
const UUID_TYPES = ['uuid'];
const TEXT_TYPES = ['text', 'varchar', 'bpchar'];

interface Fill<R> {
  column: string;
  /** What generate may leave NULL in it (a NOT NULL column then cannot be filled). */
  nullable: boolean;
  value: (row: R) => unknown;
}

export function planTarget(
  shape: SourceShape,
  columns: { events: readonly CatalogColumn[]; content: readonly CatalogColumn[] },
): GeneratorTarget {
  const events = byName(columns.events);
  const content = byName(columns.content);

  // The content key must fit both the content table's key and events.content_id.
  const contentForm = keyForm(
    [content.get(shape.contentKey)!, events.get('content_id')!],
    `${display(shape.content)}.${shape.contentKey} and ${display(shape.events)}.content_id`,
  );
  const userColumn = events.get('user_id');
  const userForm = userColumn ? keyForm([userColumn], `${display(shape.events)}.user_id`) : null;
  const toInteger = userForm?.kind === 'integer' ? integerId(userForm.max) : null;
  // uuid and text user ids go in as generated (the default tables' per-row cost stays as it was).
  const userId: (e: GeneratedEvent) => unknown =
    toInteger === null ? (e) => e.user_id : (e) => (e.user_id === null ? null : toInteger(e.user_id));

  // The key first: a CONTENT_KEY that is also a column generate knows (slug, say) is written once, as the key.
  const contentFills = present<CatalogItem>(content, [
    { column: shape.contentKey, nullable: false, value: (c) => c.id },
    { column: 'slug', nullable: false, value: (c) => c.slug },
    { column: 'title', nullable: false, value: (c) => c.title },
    { column: 'content_type', nullable: false, value: (c) => c.content_type },
    { column: 'length_seconds', nullable: true, value: (c) => c.length_seconds },
    { column: 'publish_ts', nullable: false, value: (c) => c.publish_ts },
  ]);
  const eventFills = present<GeneratedEvent>(events, [
    { column: 'content_id', nullable: false, value: (e) => e.content_id },
    { column: 'user_id', nullable: true, value: userId },
    { column: 'event_type', nullable: false, value: (e) => e.event_type },
    { column: 'event_ts', nullable: false, value: (e) => e.event_ts },
    { column: 'duration_ms', nullable: true, value: (e) => e.duration_ms },
    { column: 'device', nullable: false, value: (e) => e.device },
    { column: 'raw_payload', nullable: false, value: (e) => JSON.stringify(e.raw_payload) },
  ]);
  assertFillable(shape.content, content, contentFills);
  assertFillable(shape.events, events, eventFills);

  const keyColumn = content.get(shape.contentKey)!;
  const contentKey = quoteIdent(shape.contentKey);
  const contentTable = qualifiedName(shape.content);
  // A user's row under one of our keys is kept only when it is of the same type (see writer).
  const selectText =
    `SELECT ${contentKey}::text AS key, ${quoteIdent('content_type')}::text AS content_type FROM ${contentTable}` +
    ` WHERE ${contentKey} = ANY($1::${keyColumn.display}[])`;

  // Built once: the events statement is sent every tick.
  const contentText =
    insertText(
      contentTable,
      content,
      contentFills,
      keyColumn.identityAlways ? ' OVERRIDING SYSTEM VALUE' : '',
    ) + ' ON CONFLICT DO NOTHING';
  const eventsText = insertText(qualifiedName(shape.events), events, eventFills, '');

  return {
    shape,
    keyed: (items) => {
      if (contentForm.kind === 'uuid') return items.map((c) => ({ ...c }));
      // Derived from the item's uuid (itself from the catalogue seed): the same catalogue gets
      // the same keys on every run, so re-runs add no content. Rare clashes move to the next free key.
      const derive = integerId(contentForm.max);
      const taken = new Set<string>();
      return items.map((c) => {
        let key = Number(derive(c.id));
        while (taken.has(String(key))) key = (key % contentForm.max) + 1;
        taken.add(String(key));
        return { ...c, id: String(key) };
      });
    },
    insertContent: (items) => ({ text: contentText, values: valuesOf(contentFills, items) }),
    selectContent: (items) => ({ text: selectText, values: [items.map((c) => c.id)] }),
    insertEvents: (rows) => ({ text: eventsText, values: valuesOf(eventFills, rows) }),
  };
}

function byName(columns: readonly CatalogColumn[]): Map<string, CatalogColumn> {
  return new Map(columns.map((c) => [c.name, c]));
}

/** The fills whose column exists and can be written (a generated column computes its own value). */
function present<R>(columns: Map<string, CatalogColumn>, fills: Fill<R>[]): Fill<R>[] {
  return fills.filter(
    (f, i) =>
      columns.get(f.column)?.generated === false && fills.findIndex((g) => g.column === f.column) === i,
  );
}

/** `INSERT ... SELECT * FROM unnest($1::type[], ...)`: one array per column, typed as the column is. */
function insertText<R>(
  table: string,
  columns: Map<string, CatalogColumn>,
  fills: Fill<R>[],
  override: string,
): string {
  const names = fills.map((f) => quoteIdent(f.column)).join(', ');
  const arrays = fills.map((f, i) => `$${i + 1}::${arrayCastType(columns.get(f.column)!)}[]`).join(', ');
  return `INSERT INTO ${table} (${names})${override} SELECT * FROM unnest(${arrays})`;
}

/**
 * The element type the parameters are cast to: the column's own, but without a length. An
 * explicit cast to varchar(4) or char(4) cuts 'pause' to 'paus' silently; the INSERT's own
 * assignment to the column refuses such a value instead (writer.ts turns that into one line).
 * (Numeric precision is left as it is: the assignment rounds as the cast does.)
 */
function arrayCastType(column: CatalogColumn): string {
  return UNBOUNDED_TYPES.includes(column.type) && column.display.includes('(') ? column.type : column.display;
}

const UNBOUNDED_TYPES = ['varchar', 'bpchar'];

function valuesOf<R>(fills: Fill<R>[], rows: readonly R[]): unknown[][] {
  return fills.map((f) => rows.map(f.value));
}

/**
 * Refuses, up front and in one line, a table generate cannot fill: a NOT NULL column it does
 * not know and Postgres does not fill, or a NOT NULL column it sometimes leaves empty (clicks
 * have no duration, logged-out visitors no user). Better than a failed INSERT per tick.
 */
function assertFillable<R>(table: TableName, columns: Map<string, CatalogColumn>, fills: Fill<R>[]): void {
  const filled = new Map(fills.map((f) => [f.column, f]));
  for (const column of columns.values()) {
    const fill = filled.get(column.name);
    if (!column.notNull || (fill && !fill.nullable)) continue;
    if (fill) {
      throw shapeError(
        `${display(table)}.${column.name} is NOT NULL, but generated traffic leaves it empty at times`,
        `allow NULL in ${column.name}, or generate into other tables (EVENTS_TABLE / CONTENT_TABLE)`,
      );
    }
    if (column.defaulted || column.generated) continue;
    throw shapeError(
      `${display(table)}.${column.name} is NOT NULL without a default, and generate does not know what to put in it`,
      `give ${column.name} a default, or generate into other tables (EVENTS_TABLE / CONTENT_TABLE)`,
    );
  }
}

/** The key form that fits every given column: integers in the smallest range, else uuids. */
function keyForm(columns: CatalogColumn[], what: string): KeyForm {
  const integers = columns.filter((c) => c.type in INTEGER_MAX);
  const uuids = columns.filter((c) => UUID_TYPES.includes(c.type));
  if (integers.length > 0 && uuids.length > 0) {
    throw shapeError(
      `${what} are ${columns.map((c) => c.display).join(' and ')}: no generated key fits both`,
      'give both columns the same key type',
    );
  }
  if (integers.length > 0)
    return { kind: 'integer', max: Math.min(...integers.map((c) => INTEGER_MAX[c.type])) };
  if (columns.every((c) => uuids.includes(c) || TEXT_TYPES.includes(c.type))) return { kind: 'uuid' };
  // discoverShape admits only uuid, integer and text keys; this guards a future type.
  throw shapeError(
    `${what}: generate cannot make keys of type ${columns[0].display}`,
    'use uuid, bigint, integer or text',
  );
}

/** A uuid -> a positive integer in [1, max], the same every time (13 hex digits: exact in a double). */
function integerId(max: number): (uuid: string) => string {
  return (uuid) => String((parseInt(uuid.replace(/-/g, '').slice(0, 13), 16) % max) + 1);
}
