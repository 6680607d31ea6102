import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pg from 'pg';
import { inline } from '../../src/db/state-owner.js';

// migrate's statements on another role's state schema run through EXECUTE, parameters inlined.
describe('inline (parameters as literals for the state-owner function)', () => {
  const client = new pg.Client(); // escapeLiteral only: never connected
  it('replaces $n outside quotes, as literals (E-strings for backslashes), NULL and numbers as such', () => {
    assert.equal(
      inline(client, { text: 'SELECT $1, $2, $3, $1', params: ["it's", null, 7] }),
      "SELECT 'it''s', NULL, 7, 'it''s'",
    );
    // pg's escapeLiteral: an E-string (with its leading space) when there is a backslash.
    assert.equal(inline(client, { text: 'SELECT $1', params: ['a\\b'] }), "SELECT  E'a\\\\b'");
  });
  it('leaves $n inside quoted identifiers and literals alone (a key column named cid$1)', () => {
    assert.equal(
      inline(client, { text: `SELECT "cid$1", 'cost $2' FROM t WHERE k = $1`, params: ['x'] }),
      `SELECT "cid$1", 'cost $2' FROM t WHERE k = 'x'`,
    );
  });
  it('refuses a missing parameter', () => {
    assert.throws(() => inline(client, { text: 'SELECT $2', params: ['x'] }), /\$2 missing/);
  });
});
