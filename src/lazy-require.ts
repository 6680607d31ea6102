import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/**
 * A client library loaded on first use instead of at start-up. `engagement run` with its
 * defaults (DuckDB, Redis, HTTP) never touches Kafka, ClickHouse or BigQuery, yet importing
 * their clients at start cost every process about 4 MB of heap and 9 MB of resident memory
 * (loading `run`'s modules: heap 23.2 -> 19.4 MB, RSS 128 -> 119 MB). The packages are
 * CommonJS, so `require` loads them synchronously and constructors stay synchronous.
 * `loaded()` answers without loading: an `instanceof` check on an error needs the class
 * only if the library ran.
 */
export interface LazyModule<T> {
  (): T;
  loaded(): T | undefined;
}

export function lazyRequire<T>(name: string): LazyModule<T> {
  let mod: T | undefined;
  const get = (() => (mod ??= require(name) as T)) as LazyModule<T>;
  get.loaded = () => mod;
  return get;
}
