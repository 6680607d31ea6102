import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { closeServer, listen, readBody } from './http-server.js';

/**
 * A local stand-in for the BigQuery REST API v2 (https://cloud.google.com/bigquery/docs/reference/rest),
 * for tests only: there is no BigQuery here. It checks every request against the documented
 * shapes and answers as BigQuery does, so a wrong request fails the test instead of passing:
 *
 * - datasets.get / datasets.insert (`datasetReference`), 404 notFound, 409 duplicate;
 * - tables.get / tables.insert: `tableReference`, `schema.fields[]` (name rules, types, modes,
 *   NUMERIC precision/scale), `timePartitioning` (type DAY|HOUR|MONTH|YEAR, field TIMESTAMP/DATE/
 *   DATETIME), `clustering.fields` (<= 4, existing, clusterable types), or a `view.query`;
 * - tabledata.insertAll: `rows[].insertId` and `rows[].json` checked against the table schema;
 *   per-row `insertErrors` (reason `invalid`; other rows `stopped` unless skipInvalidRows);
 *   best-effort insertId dedup within a window; 50,000-row and 10 MB request limits;
 * - error bodies `{ error: { code, message, errors: [{ reason, message }], status } }`;
 * - faults on demand: the next N requests answer 503 backendError (or 403 quotaExceeded).
 */

export interface FakeField {
  name: string;
  type: string;
  mode?: string;
  precision?: string;
  scale?: string;
}

export interface FakeTable {
  tableReference: { projectId: string; datasetId: string; tableId: string };
  schema?: { fields: FakeField[] };
  timePartitioning?: { type: string; field?: string };
  clustering?: { fields: string[] };
  view?: { query: string; useLegacySql?: boolean };
  rows: Record<string, unknown>[];
  insertIds: Map<string, number>;
}

export interface BigQueryFake {
  url: string;
  port: number;
  token: string;
  datasets: Map<string, { datasetReference: { projectId: string; datasetId: string }; location?: string }>;
  tables: Map<string, FakeTable>;
  /** Every request: method, path and (for insertAll) the number of rows. */
  requests: { method: string; path: string; rows?: number; status: number }[];
  /** Answers the next `count` requests with an error instead of serving them. */
  failNext(count: number, kind?: '503' | 'quota'): void;
  table(projectId: string, datasetId: string, tableId: string): FakeTable | undefined;
  /** Closes and reopens on the same port; the data stays (BigQuery is a managed service). */
  restart(): Promise<void>;
  close(): Promise<void>;
}

const TYPES = new Set([
  'INT64',
  'INTEGER',
  'FLOAT64',
  'FLOAT',
  'NUMERIC',
  'BIGNUMERIC',
  'BOOL',
  'BOOLEAN',
  'STRING',
  'BYTES',
  'TIMESTAMP',
  'DATE',
  'TIME',
  'DATETIME',
  'JSON',
  'GEOGRAPHY',
]);
const CLUSTERABLE = new Set([
  'INT64',
  'INTEGER',
  'NUMERIC',
  'BIGNUMERIC',
  'BOOL',
  'BOOLEAN',
  'STRING',
  'TIMESTAMP',
  'DATE',
  'DATETIME',
  'GEOGRAPHY',
]);
const TIMESTAMP_RE = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:?\d{2}| UTC)?$/;

class ApiError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

export async function startBigQueryFake(
  options: { port?: number; token?: string; dedupWindowMs?: number } = {},
): Promise<BigQueryFake> {
  const token = options.token ?? 'test-token';
  const dedupWindowMs = options.dedupWindowMs ?? 60_000;
  const datasets: BigQueryFake['datasets'] = new Map();
  const tables = new Map<string, FakeTable>();
  const requests: BigQueryFake['requests'] = [];
  let faults: { count: number; kind: '503' | 'quota' } = { count: 0, kind: '503' };

  function route(method: string, path: string, body: unknown): [number, unknown] {
    if (faults.count > 0) {
      faults.count--;
      if (faults.kind === 'quota')
        throw new ApiError(
          403,
          'quotaExceeded',
          'Exceeded rate limits: too many api requests per user per method for this user_method.',
        );
      throw new ApiError(503, 'backendError', 'Service is unavailable. Please retry.');
    }
    let m = /^\/bigquery\/v2\/projects\/([^/]+)\/datasets$/.exec(path);
    if (m && method === 'POST') return [200, insertDataset(m[1], body)];
    m = /^\/bigquery\/v2\/projects\/([^/]+)\/datasets\/([^/]+)$/.exec(path);
    if (m && method === 'GET') {
      const ds = datasets.get(`${m[1]}:${m[2]}`);
      if (!ds) throw new ApiError(404, 'notFound', `Not found: Dataset ${m[1]}:${m[2]}`);
      return [200, { kind: 'bigquery#dataset', id: `${m[1]}:${m[2]}`, ...ds }];
    }
    m = /^\/bigquery\/v2\/projects\/([^/]+)\/datasets\/([^/]+)\/tables$/.exec(path);
    if (m && method === 'POST') return [200, insertTable(m[1], m[2], body)];
    m = /^\/bigquery\/v2\/projects\/([^/]+)\/datasets\/([^/]+)\/tables\/([^/]+)$/.exec(path);
    if (m && method === 'GET') {
      const t = tables.get(`${m[1]}:${m[2]}.${m[3]}`);
      if (!t) throw new ApiError(404, 'notFound', `Not found: Table ${m[1]}:${m[2]}.${m[3]}`);
      const { rows: _rows, insertIds: _ids, ...resource } = t;
      return [
        200,
        {
          kind: 'bigquery#table',
          id: `${m[1]}:${m[2]}.${m[3]}`,
          type: t.view ? 'VIEW' : 'TABLE',
          ...resource,
        },
      ];
    }
    m = /^\/bigquery\/v2\/projects\/([^/]+)\/datasets\/([^/]+)\/tables\/([^/]+)\/insertAll$/.exec(path);
    if (m && method === 'POST') return [200, insertAll(m[1], m[2], m[3], body)];
    throw new ApiError(404, 'notFound', `Unknown method ${method} ${path}`);
  }

  function insertDataset(projectId: string, body: unknown): unknown {
    const ref = (body as { datasetReference?: { projectId?: string; datasetId?: string } }).datasetReference;
    if (!ref?.datasetId || !/^[A-Za-z0-9_]{1,1024}$/.test(ref.datasetId))
      throw new ApiError(400, 'invalid', 'Invalid dataset ID');
    if (ref.projectId && ref.projectId !== projectId)
      throw new ApiError(400, 'invalid', 'datasetReference.projectId does not match the URL');
    const key = `${projectId}:${ref.datasetId}`;
    if (datasets.has(key)) throw new ApiError(409, 'duplicate', `Already Exists: Dataset ${key}`);
    const location = (body as { location?: string }).location;
    datasets.set(key, { datasetReference: { projectId, datasetId: ref.datasetId }, location });
    return {
      kind: 'bigquery#dataset',
      id: key,
      datasetReference: { projectId, datasetId: ref.datasetId },
      location: location ?? 'US',
    };
  }

  function insertTable(projectId: string, datasetId: string, body: unknown): unknown {
    if (!datasets.has(`${projectId}:${datasetId}`))
      throw new ApiError(404, 'notFound', `Not found: Dataset ${projectId}:${datasetId}`);
    const b = body as Partial<FakeTable>;
    const tableId = b.tableReference?.tableId;
    if (!tableId || !/^[\p{L}\p{M}\p{N}\p{Pc}\p{Pd}\p{Zs}]{1,1024}$/u.test(tableId))
      throw new ApiError(400, 'invalid', 'Invalid table ID');
    if (b.tableReference?.datasetId && b.tableReference.datasetId !== datasetId)
      throw new ApiError(400, 'invalid', 'tableReference.datasetId does not match the URL');
    const key = `${projectId}:${datasetId}.${tableId}`;
    if (tables.has(key)) throw new ApiError(409, 'duplicate', `Already Exists: Table ${key}`);
    if (b.view) {
      if (typeof b.view.query !== 'string' || !b.view.query.trim())
        throw new ApiError(400, 'invalid', 'A view requires a query');
      if (b.view.useLegacySql !== false)
        throw new ApiError(400, 'invalid', 'QUALIFY needs Standard SQL: set view.useLegacySql=false');
    } else {
      validateSchema(b);
    }
    const table: FakeTable = {
      tableReference: { projectId, datasetId, tableId },
      schema: b.schema,
      timePartitioning: b.timePartitioning,
      clustering: b.clustering,
      view: b.view,
      rows: [],
      insertIds: new Map(),
    };
    tables.set(key, table);
    const { rows: _r, insertIds: _i, ...resource } = table;
    return { kind: 'bigquery#table', id: key, ...resource };
  }

  function validateSchema(b: Partial<FakeTable>): void {
    const fields = b.schema?.fields;
    if (!Array.isArray(fields) || fields.length === 0)
      throw new ApiError(400, 'invalid', 'Schema has no fields');
    const byName = new Map<string, FakeField>();
    for (const f of fields) {
      if (!/^[A-Za-z_][A-Za-z0-9_]{0,299}$/.test(f.name))
        throw new ApiError(400, 'invalid', `Invalid field name "${f.name}"`);
      if (byName.has(f.name.toLowerCase()))
        throw new ApiError(400, 'invalid', `Field ${f.name} already exists in schema`);
      if (!TYPES.has(f.type))
        throw new ApiError(400, 'invalid', `Invalid value for type: ${f.type} is not a valid value`);
      if (f.mode && !['NULLABLE', 'REQUIRED', 'REPEATED'].includes(f.mode))
        throw new ApiError(400, 'invalid', `Invalid mode ${f.mode}`);
      if (f.precision !== undefined || f.scale !== undefined) {
        const p = Number(f.precision);
        const s = Number(f.scale ?? 0);
        if (f.type !== 'NUMERIC' || !(p >= 1 && s >= 0 && s <= 9 && p - s >= 1 && p - s <= 29)) {
          throw new ApiError(
            400,
            'invalid',
            `Invalid NUMERIC(${f.precision}, ${f.scale}) for field ${f.name}`,
          );
        }
      }
      byName.set(f.name.toLowerCase(), f);
    }
    const tp = b.timePartitioning;
    if (tp) {
      if (!['DAY', 'HOUR', 'MONTH', 'YEAR'].includes(tp.type))
        throw new ApiError(400, 'invalid', `Invalid timePartitioning.type ${tp.type}`);
      if (tp.field) {
        const f = byName.get(tp.field.toLowerCase());
        if (!f || !['TIMESTAMP', 'DATE', 'DATETIME'].includes(f.type) || f.mode === 'REPEATED') {
          throw new ApiError(
            400,
            'invalid',
            `The field specified for time partitioning can only be of type TIMESTAMP, DATE or DATETIME. The type found is: ${f?.type ?? 'missing'}.`,
          );
        }
      }
    }
    const clustering = b.clustering?.fields;
    if (clustering) {
      if (clustering.length === 0 || clustering.length > 4)
        throw new ApiError(400, 'invalid', 'Too many clustering fields: at most 4');
      for (const name of clustering) {
        const f = byName.get(name.toLowerCase());
        if (!f)
          throw new ApiError(
            400,
            'invalid',
            `The field specified for clustering cannot be found in the schema. Invalid field: ${name}.`,
          );
        if (!CLUSTERABLE.has(f.type))
          throw new ApiError(
            400,
            'invalid',
            `Field ${name} is of type ${f.type} which is not supported for clustering`,
          );
      }
    }
  }

  function insertAll(projectId: string, datasetId: string, tableId: string, body: unknown): unknown {
    const key = `${projectId}:${datasetId}.${tableId}`;
    const table = tables.get(key);
    if (!table) throw new ApiError(404, 'notFound', `Not found: Table ${key}`);
    if (table.view) throw new ApiError(400, 'invalid', `Cannot insert into a view: ${key}`);
    const b = body as {
      rows?: { insertId?: unknown; json?: unknown }[];
      skipInvalidRows?: boolean;
      ignoreUnknownValues?: boolean;
    };
    if (!Array.isArray(b.rows) || b.rows.length === 0)
      throw new ApiError(400, 'invalid', 'No rows present in the request.');
    if (b.rows.length > 50_000)
      throw new ApiError(400, 'invalid', 'too many rows present in the request, limit: 50000');
    const insertErrors: {
      index: number;
      errors: { reason: string; location: string; debugInfo: string; message: string }[];
    }[] = [];
    const accepted: [number, Record<string, unknown>, string | undefined][] = [];
    b.rows.forEach((row, index) => {
      if (row.insertId !== undefined && typeof row.insertId !== 'string')
        throw new ApiError(400, 'invalid', 'rows[].insertId must be a string');
      const problem = checkRow(table.schema!.fields, row.json, b.ignoreUnknownValues === true);
      if (problem)
        insertErrors.push({
          index,
          errors: [
            { reason: 'invalid', location: problem.location, debugInfo: '', message: problem.message },
          ],
        });
      else accepted.push([index, row.json as Record<string, unknown>, row.insertId as string | undefined]);
    });
    if (insertErrors.length > 0 && !b.skipInvalidRows) {
      // Without skipInvalidRows nothing is inserted; the valid rows are reported `stopped`.
      for (const [index] of accepted)
        insertErrors.push({
          index,
          errors: [{ reason: 'stopped', location: '', debugInfo: '', message: '' }],
        });
      insertErrors.sort((x, y) => x.index - y.index);
      return { kind: 'bigquery#tableDataInsertAllResponse', insertErrors };
    }
    const now = Date.now();
    for (const [, json, insertId] of accepted) {
      const seen = insertId === undefined ? undefined : table.insertIds.get(insertId);
      if (seen !== undefined && now - seen < dedupWindowMs) continue; // best-effort dedup by insertId
      if (insertId !== undefined) table.insertIds.set(insertId, now);
      table.rows.push(json);
    }
    return insertErrors.length > 0
      ? { kind: 'bigquery#tableDataInsertAllResponse', insertErrors }
      : { kind: 'bigquery#tableDataInsertAllResponse' };
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const record: BigQueryFake['requests'][number] = {
      method: req.method ?? 'GET',
      path: url.pathname,
      status: 200,
    };
    requests.push(record);
    let status = 200;
    let payload: unknown;
    try {
      if (req.headers.authorization !== `Bearer ${token}`) {
        throw new ApiError(
          401,
          'unauthorized',
          'Request is missing required authentication credential. Expected OAuth 2 access token.',
        );
      }
      const raw = await readBody(req);
      if (raw.length > 10 * 1024 * 1024)
        throw new ApiError(400, 'invalid', 'Request payload size exceeds the limit: 10485760 bytes.');
      let body: unknown = {};
      if (raw.length > 0) {
        try {
          body = JSON.parse(raw.toString('utf8'));
        } catch {
          throw new ApiError(400, 'parseError', 'Parse Error');
        }
      }
      if (url.pathname.endsWith('/insertAll')) record.rows = (body as { rows?: unknown[] }).rows?.length;
      [status, payload] = route(record.method, url.pathname, body);
    } catch (err) {
      const e = err instanceof ApiError ? err : new ApiError(500, 'internalError', String(err));
      status = e.code;
      payload = {
        error: {
          code: e.code,
          message: e.message,
          errors: [{ message: e.message, domain: 'global', reason: e.reason }],
          status: STATUS_NAMES[e.code] ?? 'UNKNOWN',
        },
      };
    }
    record.status = status;
    res.writeHead(status, { 'Content-Type': 'application/json; charset=UTF-8' }).end(JSON.stringify(payload));
  }

  let server: Server = createServer((req, res) => void handle(req, res));
  const port = await listen(server, options.port ?? 0);
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    token,
    datasets,
    tables,
    requests,
    failNext: (count, kind = '503') => {
      faults = { count, kind };
    },
    table: (p, d, t) => tables.get(`${p}:${d}.${t}`),
    restart: async () => {
      await closeServer(server);
      server = createServer((req, res) => void handle(req, res));
      await listen(server, port);
    },
    close: () => closeServer(server),
  };
}

const STATUS_NAMES: Record<number, string> = {
  400: 'INVALID_ARGUMENT',
  401: 'UNAUTHENTICATED',
  403: 'PERMISSION_DENIED',
  404: 'NOT_FOUND',
  409: 'ALREADY_EXISTS',
  500: 'INTERNAL',
  503: 'UNAVAILABLE',
};

/** The first schema violation of a row, as BigQuery words it, or null. */
function checkRow(
  fields: FakeField[],
  json: unknown,
  ignoreUnknown: boolean,
): { location: string; message: string } | null {
  if (typeof json !== 'object' || json === null || Array.isArray(json))
    return { location: '', message: 'Row is not a JSON object' };
  const row = json as Record<string, unknown>;
  const known = new Map(fields.map((f) => [f.name.toLowerCase(), f]));
  if (!ignoreUnknown) {
    for (const name of Object.keys(row))
      if (!known.has(name.toLowerCase())) return { location: name, message: `no such field: ${name}.` };
  }
  for (const f of fields) {
    const v = row[f.name];
    if (v === null || v === undefined) {
      if (f.mode === 'REQUIRED') return { location: f.name, message: `Missing required field: ${f.name}.` };
      continue;
    }
    const bad = (what: string) => ({
      location: f.name,
      message: `Cannot convert value to ${what}: ${JSON.stringify(v).slice(0, 80)}`,
    });
    switch (f.type) {
      case 'INT64':
      case 'INTEGER':
        if (!(typeof v === 'string' ? /^-?\d{1,19}$/.test(v) : Number.isInteger(v))) return bad('integer');
        break;
      case 'STRING':
        if (typeof v !== 'string') return bad('string');
        break;
      case 'TIMESTAMP':
        if (
          typeof v !== 'string' ||
          !TIMESTAMP_RE.test(v) ||
          Number.isNaN(Date.parse(v.replace(' UTC', 'Z')))
        )
          return bad('timestamp');
        break;
      case 'NUMERIC': {
        const text = typeof v === 'number' ? String(v) : v;
        const m = typeof text === 'string' ? /^-?(\d+)(?:\.(\d+))?$/.exec(text) : null;
        if (!m) return bad('numeric');
        const p = Number(f.precision ?? 38);
        const s = Number(f.scale ?? 9);
        const integerDigits = m[1].replace(/^0+/, '').length;
        if ((m[2]?.length ?? 0) > s || integerDigits > p - s) {
          return {
            location: f.name,
            message: `Invalid NUMERIC value: ${text} Field: ${f.name}; Value: ${text} exceeds NUMERIC(${p}, ${s})`,
          };
        }
        break;
      }
      case 'JSON':
        try {
          if (typeof v === 'string') JSON.parse(v);
        } catch {
          return bad('JSON');
        }
        break;
    }
  }
  return null;
}
