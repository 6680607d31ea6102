import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { createLogger } from '../../src/logger.js';
import { makeDirs } from '../../src/make-dirs.js';
import { DuckDbSink } from '../../src/sinks/analytics/duckdb-sink.js';

describe('makeDirs', () => {
  const root = mkdtempSync(path.join(os.tmpdir(), 'make-dirs-'));
  after(() => rmSync(root, { recursive: true, force: true }));

  it('creates every missing level, and is a no-op when the directory exists', () => {
    const deep = path.join(root, 'a', 'b', 'c');
    makeDirs(deep);
    assert.ok(statSync(deep).isDirectory());
    makeDirs(deep);
    makeDirs(root);
  });

  it('fails at once where a file is in the way', () => {
    const file = path.join(root, 'file');
    writeFileSync(file, 'x');
    assert.throws(() => makeDirs(file), /cannot create directory .*file exists and is not a directory/);
    assert.throws(() => makeDirs(path.join(file, 'below')), /cannot create directory/);
  });

  // Node's recursive mkdir spins forever here (procfs answers ENOENT to any new entry).
  it(
    'fails at once under a directory that refuses new entries',
    { skip: process.platform !== 'linux' },
    () => {
      assert.throws(
        () => makeDirs('/proc/engagement-x/y'),
        /cannot create directory \/proc\/engagement-x\/y: ENOENT/,
      );
    },
  );

  it('a DuckDB file there is a configuration error', { skip: process.platform !== 'linux' }, async () => {
    const sink = new DuckDbSink({ path: '/proc/engagement-x/e.duckdb', logger: createLogger('silent') });
    await assert.rejects(sink.start(), /ANALYTICS_URL: cannot create directory/);
  });
});
