import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadConfig } from '../../src/config.js';
import { describeError, isSecretParameter, redactSecrets } from '../../src/errors.js';

describe('redactSecrets: one function for every URL and connection string printed', () => {
  it('masks the userinfo password of a URL, up to its last @', () => {
    assert.equal(redactSecrets('postgres://u:hunter2@h:5432/db'), 'postgres://u:***@h:5432/db');
    assert.equal(redactSecrets('redis://u:hunt@er2@127.0.0.1:6379/0'), 'redis://u:***@127.0.0.1:6379/0');
    assert.equal(redactSecrets('postgres://postgres@h/db'), 'postgres://postgres@h/db');
    // Unencoded '#', '/' and '?' in a password (zod refuses such a URL, and its error line prints it).
    for (const secret of ['ab#cd', 'pa/ss', 'a?b', 'x#y/z?w@v']) {
      const text = `got "postgres://u:${secret}@h:5432/db"`;
      assert.equal(redactSecrets(text), 'got "postgres://u:***@h:5432/db"', text);
      assert.ok(!redactSecrets(`redis://:${secret}@host:6379`).includes(secret));
    }
  });

  it('masks the password of a malformed URL and of the tail of one a driver echoes', () => {
    // Masking more of an odd URL than its password is the safe side; only the host must stay.
    for (const text of [
      'postgres//u:sekrit@h/db',
      'postgres:/u:sekrit@h/db',
      'connect to 127.0.0.1:5432/u:sekrit@h/db',
      'got "postgres:sekrit@h/db"',
    ]) {
      const shown = redactSecrets(text);
      assert.ok(!shown.includes('sekrit') && shown.includes('***@h/db'), shown);
    }
  });

  it('masks password, sslpassword and passfile query parameters', () => {
    assert.equal(
      redactSecrets('postgres://postgres@127.0.0.1:54391/advb?password=postgres'),
      'postgres://postgres@127.0.0.1:54391/advb?password=***',
    );
    assert.equal(
      redactSecrets('postgres://h/db?sslmode=require&sslpassword=k3y&passfile=/p/.pgpass&application_name=a'),
      'postgres://h/db?sslmode=require&sslpassword=***&passfile=***&application_name=a',
    );
  });

  it('masks libpq keyword strings, quoted values whole', () => {
    assert.equal(
      redactSecrets('host=127.0.0.1 user=u password=hunter2 dbname=x'),
      'host=127.0.0.1 user=u password=*** dbname=x',
    );
    assert.equal(redactSecrets("host=h password='a b\\' c' port=5"), 'host=h password=*** port=5');
    assert.equal(redactSecrets(JSON.stringify('user=u password=hunter2')), '"user=u password=***"');
  });

  it('leaves other text alone', () => {
    for (const text of ['user=u dbname=x', 'a@b.c said hello', 'http://h:8080/path?limit=5'])
      assert.equal(redactSecrets(text), text);
  });

  it('reaches the config error line and described errors', () => {
    // (`postgres:/u:sekrit@h/db` passes the config check; its connect error echoes the tail tested above.)
    assert.throws(
      () => loadConfig({}, { DATABASE_URL: 'postgres//u:sekrit@h/db' }),
      (err: unknown) => /DATABASE_URL/.test(String(err)) && !/sekrit/.test(describeError(err)),
    );
    assert.throws(
      () => loadConfig({}, { DATABASE_URL: 'host=127.0.0.1 user=u password=hunter2' }),
      (err: unknown) => /DATABASE_URL/.test(String(err)) && !/hunter2/.test(describeError(err)),
    );
    assert.doesNotMatch(describeError(new Error('bad url postgres://h/db?password=hunter2')), /hunter2/);
  });

  it('names the secret parameters', () => {
    for (const key of ['password', 'sslpassword', 'passfile', 'PGPASSWORD', 'api_token'])
      assert.ok(isSecretParameter(key), key);
    for (const key of ['sslmode', 'application_name', 'user']) assert.ok(!isSecretParameter(key), key);
  });
});
