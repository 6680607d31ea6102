import type pg from 'pg';
import { qualifiedName, type SourceShape, type TableName } from '../domain/source-shape.js';
import { ErrorCodes, PipelineError } from '../errors.js';
import { ident } from './postgres.js';

type Queryable = Pick<pg.Pool, 'query'> | Pick<pg.Client, 'query'>;

/**
 * Every action, for both tables: content needs its updates, deletes and truncates (the
 * dimension), the events table its inserts and its truncates (a TRUNCATE ... RESTART IDENTITY
 * must stop the pipeline). One publication serves both, so it publishes all four.
 */
const ACTIONS = ['insert', 'update', 'delete', 'truncate'] as const;

/** What the publication does with one of the shape's tables. */
interface PublishedTable {
  table: TableName;
  /** Covered: listed, in a published schema, or FOR ALL TABLES. */
  published: boolean;
  /** The table's row filter (`WHERE ...`), as Postgres prints it. */
  rowFilter: string | null;
  /** Columns a column list leaves out (generated ones aside: without a list they are not published either). */
  omitted: string[] | null;
}

interface PublicationState {
  missingActions: string[];
  tables: PublishedTable[];
}

/**
 * Refuses, in one line, a publication that would drop changes of the shape's tables without
 * a word: an action it does not publish, a row filter, a column list that leaves columns out.
 * Pgoutput applies these on the server, so the stream could never tell: the destinations would
 * hold a filtered copy, enrichment a stale dimension, and a TRUNCATE ... RESTART IDENTITY
 * would go unseen. A table the publication does not cover is refused too, unless
 * `tablesMayBeMissing` (migrate, which adds them): those are returned. A publication that does
 * not exist is EP_ERR_PUBLICATION_MISSING (only migrate creates it).
 */
export async function assertPublicationStreams(
  db: Queryable,
  name: string,
  shape: SourceShape,
  options: { tablesMayBeMissing?: boolean } = {},
): Promise<TableName[]> {
  const state = await readPublication(db, name, shape);
  if (state === null) {
    throw new PipelineError(
      ErrorCodes.PUBLICATION_MISSING,
      `publication ${name} does not exist`,
      'config',
      'run `engagement migrate` (or set PUBLICATION_NAME to the publication it created)',
    );
  }
  const missing = state.tables.filter((t) => !t.published).map((t) => t.table);
  const problems: string[] = [];
  const fixes: string[] = [];
  if (state.missingActions.length > 0) {
    problems.push(`does not publish ${state.missingActions.join(', ')}`);
    fixes.push(`ALTER PUBLICATION ${ident(name)} SET (publish = '${ACTIONS.join(', ')}')`);
  }
  const filtered = state.tables.filter((t) => t.rowFilter !== null || t.omitted !== null);
  for (const t of filtered) {
    const what = [
      t.rowFilter !== null && `a row filter (WHERE ${t.rowFilter})`,
      t.omitted !== null && `a column list without ${t.omitted.join(', ')}`,
    ].filter(Boolean);
    problems.push(`has ${what.join(' and ')} on ${display(t.table)}`);
  }
  if (filtered.length > 0) {
    // SET TABLE replaces the whole list: the hint names the shape's tables and says so.
    fixes.push(
      `ALTER PUBLICATION ${ident(name)} SET TABLE ${[shape.content, shape.events].map(qualifiedName).join(', ')} (no WHERE, no column list; name any other tables it should keep)`,
    );
  }
  if (missing.length > 0 && !options.tablesMayBeMissing) {
    problems.push(`does not publish ${missing.map(display).join(' and ')}`);
    fixes.push('run `engagement migrate` (it adds them)');
  }
  if (problems.length === 0) return missing;
  throw new PipelineError(
    ErrorCodes.PUBLICATION,
    `publication ${name} ${problems.join('; ')}: changes of the source tables would be dropped or arrive incomplete, silently`,
    'config',
    `${fixes.join('; ')}; or DROP PUBLICATION ${ident(name)} and run \`engagement migrate\``,
  );
}

async function readPublication(
  db: Queryable,
  name: string,
  shape: SourceShape,
): Promise<PublicationState | null> {
  const tables = [shape.content, shape.events];
  const { rows: pubs } = await db.query<{
    insert: boolean;
    update: boolean;
    delete: boolean;
    truncate: boolean;
    pg15: boolean;
  }>(
    `SELECT pubinsert AS insert, pubupdate AS update, pubdelete AS delete, pubtruncate AS truncate,
            current_setting('server_version_num')::int >= 150000 AS pg15
       FROM pg_publication WHERE pubname = $1`,
    [name],
  );
  const pub = pubs[0];
  if (!pub) return null;
  const missingActions = ACTIONS.filter((action) => !pub[action]);
  // Row filters, column lists and TABLES IN SCHEMA came with Postgres 15: before, the catalog
  // has none of them, and a table is published when listed or FOR ALL TABLES.
  const { rows } = await db.query<{
    ord: string;
    published: boolean;
    row_filter: string | null;
    omitted: string[] | null;
  }>(
    pub.pg15
      ? `SELECT t.ord::text AS ord,
                p.puballtables OR r.oid IS NOT NULL
                  OR EXISTS (SELECT 1 FROM pg_publication_namespace pn
                              WHERE pn.pnpubid = p.oid AND pn.pnnspid = c.relnamespace) AS published,
                pg_get_expr(r.prqual, r.prrelid) AS row_filter,
                CASE WHEN r.prattrs IS NOT NULL THEN
                  (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
                    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
                      AND NOT a.attnum = ANY (r.prattrs::int2[]))
                END AS omitted
           FROM pg_publication p
           CROSS JOIN unnest($2::text[]) WITH ORDINALITY AS t(name, ord)
           JOIN pg_class c ON c.oid = to_regclass(t.name)
           LEFT JOIN pg_publication_rel r ON r.prpubid = p.oid AND r.prrelid = c.oid
          WHERE p.pubname = $1`
      : `SELECT t.ord::text AS ord,
                p.puballtables OR r.oid IS NOT NULL AS published,
                NULL AS row_filter, NULL AS omitted
           FROM pg_publication p
           CROSS JOIN unnest($2::text[]) WITH ORDINALITY AS t(name, ord)
           JOIN pg_class c ON c.oid = to_regclass(t.name)
           LEFT JOIN pg_publication_rel r ON r.prpubid = p.oid AND r.prrelid = c.oid
          WHERE p.pubname = $1`,
    [name, tables.map(qualifiedName)],
  );
  return {
    missingActions,
    tables: tables.map((table, i) => {
      const row = rows.find((r) => Number(r.ord) === i + 1);
      return {
        table,
        published: row?.published ?? false,
        rowFilter: row?.row_filter ?? null,
        omitted: row?.omitted ?? null,
      };
    }),
  };
}

function display(table: TableName): string {
  return `${table.schema}.${table.name}`;
}
