import { DuckDBInstance } from '@duckdb/node-api';

/** Opens a DuckDB file read-only (the writer must be stopped) and returns row objects as JSON. */
export async function duckdbQuery(file: string, sql: string): Promise<Record<string, unknown>[]> {
  const instance = await DuckDBInstance.create(file, { access_mode: 'READ_ONLY' });
  const connection = await instance.connect();
  try {
    const reader = await connection.runAndReadAll(sql);
    return reader.getRowObjectsJson() as Record<string, unknown>[];
  } finally {
    connection.closeSync();
    instance.closeSync();
  }
}
