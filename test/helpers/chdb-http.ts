import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { Session } from 'chdb';
import { quoteClickHouseIdent } from '../../src/sinks/analytics/clickhouse-schema.js';
import { closeServer, listen, readBody } from './http-server.js';

/**
 * A test-only ClickHouse HTTP front on chdb (ClickHouse 26.x in-process): it speaks the part of
 * ClickHouse's HTTP interface that @clickhouse/client uses, so the sink's exact DDL and inserts
 * run on the real engine. Everything is executed the way clickhouse-server does it:
 *
 * - `?query=` is the start of the statement and the POST body is appended to it (an INSERT's
 *   data); without `?query=` the body is the statement;
 * - URL parameters other than the interface's own are settings for that one query (applied with
 *   SET, reset with SET ... = DEFAULT afterwards, since a chdb session keeps SET state);
 *   `param_x` are query parameters bound server-side; `database` is the default database;
 * - auth by Basic header, X-ClickHouse-User/Key headers or user/password parameters;
 * - gzip request bodies (Content-Encoding) and gzip responses (enable_http_compression=1);
 * - errors: HTTP 4xx/5xx, X-ClickHouse-Exception-Code, body `Code: N. DB::Exception: ...`.
 *
 * chdb keeps one session per process, so requests are executed one at a time.
 */

export interface RecordedRequest {
  method: string;
  query: string;
  settings: Record<string, string>;
  database: string | null;
  queryId: string | null;
  status: number;
}

export interface ChdbHttp {
  url: string;
  port: number;
  dataDir: string;
  user: string;
  password: string;
  /** Every statement received, in order. */
  requests: RecordedRequest[];
  /** Runs SQL directly on the session (not through HTTP), returning rows of a JSONEachRow result. */
  rows<T = Record<string, unknown>>(sql: string): Promise<T[]>;
  /** Stops serving and closes the engine, then reopens the same data directory on the same port. */
  restart(): Promise<void>;
  close(): Promise<void>;
}

/** HTTP parameters that belong to the interface, not to the query's settings. */
const INTERFACE_PARAMS = new Set([
  'query',
  'query_id',
  'database',
  'default_format',
  'user',
  'password',
  'quota_key',
  'session_id',
  'session_timeout',
  'session_check',
  'compress',
  'decompress',
  'buffer_size',
  'wait_end_of_query',
  'enable_http_compression',
  'role',
]);

const CONTENT_TYPES: Record<string, string> = {
  JSONEachRow: 'application/x-ndjson; charset=UTF-8',
  JSON: 'application/json; charset=UTF-8',
  CSV: 'text/csv; charset=UTF-8; header=absent',
};

/** The HTTP status clickhouse-server answers for a few common error codes (default 500). */
const STATUS_BY_CODE: Record<number, number> = {
  60: 404, // UNKNOWN_TABLE
  81: 404, // UNKNOWN_DATABASE
  62: 400, // SYNTAX_ERROR
  27: 400, // CANNOT_PARSE_INPUT_ASSERTION_FAILED
  516: 401, // AUTHENTICATION_FAILED
  192: 401, // UNKNOWN_USER
};

export async function startChdbHttp(
  options: { dataDir?: string; port?: number; user?: string; password?: string } = {},
): Promise<ChdbHttp> {
  const dataDir = options.dataDir ?? mkdtempSync(path.join(tmpdir(), 'chdb-http-'));
  const user = options.user ?? 'default';
  const password = options.password ?? '';
  const requests: RecordedRequest[] = [];
  let session = new Session(dataDir);
  const version = String(session.query('SELECT version()', 'TabSeparated')).trim();
  let tail: Promise<unknown> = Promise.resolve();

  /** One statement at a time: SET/USE state lives in the one session. */
  function serial<T>(work: () => Promise<T>): Promise<T> {
    const next = tail.then(work, work);
    tail = next.catch(() => undefined);
    return next;
  }

  async function execute(
    sql: string,
    ctx: {
      settings: Record<string, string>;
      database: string | null;
      params: Record<string, string>;
      format: string;
    },
  ): Promise<{ body: Buffer; readRows: number; readBytes: number; elapsed: number }> {
    const applied: string[] = [];
    try {
      if (ctx.database) await session.queryAsync(`USE ${quoteClickHouseIdent(ctx.database)}`);
      for (const [name, value] of Object.entries(ctx.settings)) {
        if (!/^\w+$/.test(name))
          throw new HttpError(400, 115, `Unknown setting '${name}'. (UNKNOWN_SETTING)`);
        await session.queryAsync(`SET ${name} = ${settingLiteral(value)}`);
        applied.push(name);
      }
      const result =
        Object.keys(ctx.params).length > 0
          ? await session.queryBindAsync(sql, ctx.params, { format: ctx.format })
          : await session.queryAsync(sql, { format: ctx.format });
      return {
        body: Buffer.from(result.bytes()),
        readRows: result.rowsRead,
        readBytes: result.bytesRead,
        elapsed: result.elapsed,
      };
    } finally {
      for (const name of applied) await session.queryAsync(`SET ${name} = DEFAULT`).catch(() => undefined);
      if (ctx.database) await session.queryAsync('USE default').catch(() => undefined);
    }
  }

  /**
   * INSERT ... FORMAT <fmt> with the data in the body: chdb's raw insert hands the bytes to the
   * engine's own parser and takes the settings per insert, which is what clickhouse-server does
   * with an HTTP insert (same engine, settings and dedup logic; only the statement travels as
   * table + columns instead of text, which spares the SQL parser a multi-megabyte query).
   */
  async function rawInsert(
    insert: { table: string; columns?: string[]; format: string },
    body: Buffer,
    settings: Record<string, string>,
  ): Promise<{ body: Buffer; readRows: number; readBytes: number; elapsed: number }> {
    const summary = await session.insert({
      table: insert.table,
      columns: insert.columns,
      format: insert.format as 'JSONEachRow',
      values: body,
      settings,
    });
    return {
      body: Buffer.alloc(0),
      readRows: summary.rowsWritten,
      readBytes: summary.bytesSent,
      elapsed: summary.elapsed,
    };
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const params = url.searchParams;
    const queryId = params.get('query_id') ?? crypto.randomUUID();
    res.setHeader('X-ClickHouse-Server-Display-Name', 'chdb-http');
    res.setHeader('X-ClickHouse-Query-Id', queryId);
    res.setHeader('X-ClickHouse-Timezone', 'UTC');
    if (url.pathname === '/ping') {
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=UTF-8' }).end('Ok.\n');
      return;
    }
    if (url.pathname !== '/') {
      res.writeHead(404).end(`There is no handle ${url.pathname}\n`);
      return;
    }
    const record: RecordedRequest = {
      method: req.method ?? 'GET',
      query: '',
      settings: {},
      database: params.get('database'),
      queryId: params.get('query_id'),
      status: 200,
    };
    requests.push(record);
    try {
      authenticate(req, params);
      let body = await readBody(req);
      if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body);
      else if (req.headers['content-encoding']) {
        throw new HttpError(
          400,
          1,
          `Unknown Content-Encoding ${req.headers['content-encoding']}. (UNKNOWN_EXCEPTION)`,
        );
      }
      const head = params.get('query') ?? '';
      // clickhouse-server: the URL query, then a newline, then the body (INSERT data or the statement).
      const sql =
        head && body.length > 0 ? `${head}\n${body.toString('utf8')}` : head || body.toString('utf8');
      if (!sql.trim()) throw new HttpError(400, 62, 'Empty query. (SYNTAX_ERROR)');
      record.query = head || body.toString('utf8').slice(0, 2000);
      const settings: Record<string, string> = {};
      const bound: Record<string, string> = {};
      for (const [name, value] of params) {
        if (name.startsWith('param_')) bound[name.slice('param_'.length)] = value;
        else if (!INTERFACE_PARAMS.has(name)) settings[name] = value;
      }
      record.settings = settings;
      const format = params.get('default_format') ?? 'TabSeparated';
      const insert = body.length > 0 ? parseInsert(head, params.get('database')) : null;
      const out = await serial(() =>
        insert
          ? rawInsert(insert, body, settings)
          : execute(sql, { settings, database: params.get('database'), params: bound, format }),
      );
      const summary = {
        read_rows: String(out.readRows),
        read_bytes: String(out.readBytes),
        elapsed_ns: String(Math.round(out.elapsed * 1e9)),
      };
      const outFormat = /\bFORMAT\s+(\w+)\s*$/i.exec(head || body.toString('utf8'))?.[1] ?? format;
      const headers: Record<string, string> = {
        'Content-Type': CONTENT_TYPES[outFormat] ?? 'text/tab-separated-values; charset=UTF-8',
        'X-ClickHouse-Format': outFormat,
        'X-ClickHouse-Summary': JSON.stringify(summary),
      };
      const gzip =
        params.get('enable_http_compression') === '1' &&
        /\bgzip\b/.test(req.headers['accept-encoding'] ?? '');
      if (gzip) headers['Content-Encoding'] = 'gzip';
      res.writeHead(200, headers).end(gzip ? gzipSync(out.body) : out.body);
    } catch (err) {
      const { status, code, message } = toHttpError(err);
      record.status = status;
      res
        .writeHead(status, {
          'Content-Type': 'text/plain; charset=UTF-8',
          'X-ClickHouse-Exception-Code': String(code),
        })
        .end(
          `${message.startsWith('Code:') ? message : `Code: ${code}. DB::Exception: ${message}`} (version ${version})\n`,
        );
    }
  }

  function authenticate(req: IncomingMessage, params: URLSearchParams): void {
    let u = params.get('user') ?? (req.headers['x-clickhouse-user'] as string | undefined);
    let p = params.get('password') ?? (req.headers['x-clickhouse-key'] as string | undefined);
    const basic = /^Basic (.+)$/i.exec(req.headers.authorization ?? '');
    if (basic) {
      const decoded = Buffer.from(basic[1], 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      u = decoded.slice(0, colon);
      p = decoded.slice(colon + 1);
    }
    if ((u ?? 'default') !== user || (p ?? '') !== password) {
      throw new HttpError(
        401,
        516,
        `${u ?? 'default'}: Authentication failed: password is incorrect, or there is no user with such name. (AUTHENTICATION_FAILED)`,
      );
    }
  }

  let server: Server = createServer((req, res) => void handle(req, res));
  const port = await listen(server, options.port ?? 0);
  const front: ChdbHttp = {
    url: `http://127.0.0.1:${port}`,
    port,
    dataDir,
    user,
    password,
    requests,
    rows: async <T>(sql: string) => {
      const result = await serial(() => session.queryAsync(sql, { format: 'JSONEachRow' }));
      return result
        .text()
        .split('\n')
        .filter((line) => line.trim())
        .map((line) => JSON.parse(line) as T);
    },
    restart: async () => {
      await closeServer(server);
      await serial(async () => session.close());
      session = new Session(dataDir);
      server = createServer((req, res) => void handle(req, res));
      await listen(server, port);
    },
    close: async () => {
      await closeServer(server);
      await serial(async () => session.close());
      if (!options.dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return front;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

function toHttpError(err: unknown): { status: number; code: number; message: string } {
  if (err instanceof HttpError) return { status: err.status, code: err.code, message: err.message };
  const code = Number((err as { clickhouseCode?: unknown }).clickhouseCode) || 1000;
  const message = (err instanceof Error ? err.message : String(err)).trim();
  return { status: STATUS_BY_CODE[code] ?? 500, code, message };
}

const RAW_INSERT_FORMATS = new Set([
  'JSONEachRow',
  'JSONCompactEachRow',
  'CSV',
  'CSVWithNames',
  'TSV',
  'TabSeparated',
]);
const INSERT_RE =
  /^\s*INSERT\s+INTO\s+(?:TABLE\s+)?(?:`?(\w+)`?\.)?`?(\w+)`?\s*(?:\(([^)]*)\))?\s*FORMAT\s+(\w+)\s*$/i;

/** `INSERT INTO [db.]table [(c1, c2)] FORMAT F` in the shape chdb's raw insert accepts, else null. */
function parseInsert(
  head: string,
  database: string | null,
): { table: string; columns?: string[]; format: string } | null {
  const m = INSERT_RE.exec(head);
  if (!m || !RAW_INSERT_FORMATS.has(m[4])) return null;
  const columns = m[3]?.split(',').map((c) => c.trim().replace(/^`|`$/g, ''));
  if (columns?.some((c) => !/^\w+$/.test(c))) return null;
  const db = m[1] ?? database;
  return { table: db ? `${db}.${m[2]}` : m[2], columns, format: m[4] };
}

function settingLiteral(value: string): string {
  if (/^-?\d+(\.\d+)?$/.test(value)) return value;
  return `'${value.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;
}
