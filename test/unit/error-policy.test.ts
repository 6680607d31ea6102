import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorCodes, PipelineError } from '../../src/errors.js';
import { policyFor } from '../../src/retry/error-policy.js';

const withCode = (message: string, code: unknown) => Object.assign(new Error(message), { code });
const wrapped = (cause: unknown) =>
  new PipelineError(ErrorCodes.SINK_WRITE, 'insert failed', 'transient', undefined, { cause });

describe('policyFor', () => {
  it('network errors, 5xx, 429, timeouts and locks are transient', () => {
    assert.equal(policyFor(withCode('refused', 'ECONNREFUSED')), 'transient');
    assert.equal(policyFor(withCode('x', 'UND_ERR_SOCKET')), 'transient');
    assert.equal(policyFor(Object.assign(new Error('x'), { status: 503 })), 'transient');
    assert.equal(policyFor(Object.assign(new Error('x'), { statusCode: 429 })), 'transient');
    // 409: an Idempotency-Key retry meeting its first attempt still in progress.
    assert.equal(policyFor(Object.assign(new Error('x'), { status: 409 })), 'transient');
    assert.equal(policyFor(withCode('deadlock', '40P01')), 'transient');
    assert.equal(policyFor(withCode('lock not available', '55P03')), 'transient');
    assert.equal(policyFor(new Error('IO Error: Could not set lock on file')), 'transient');
    assert.equal(policyFor(new PipelineError(ErrorCodes.ANALYTICS_LOCKED, 'locked', 'config')), 'transient');
    assert.equal(policyFor(new Error('something unknown')), 'transient', 'unknown: held and retried');
  });

  it('authentication, permission and unknown tables are permanent for the sink', () => {
    assert.equal(policyFor(wrapped(Object.assign(new Error('x'), { code: 401 }))), 'sink');
    assert.equal(policyFor(wrapped(Object.assign(new Error('x'), { code: 403 }))), 'sink');
    assert.equal(policyFor(wrapped(Object.assign(new Error('x'), { status: 404 }))), 'sink');
    // A proxy in front of the service wanting credentials (the external sink under block).
    assert.equal(policyFor(wrapped(Object.assign(new Error('x'), { status: 407 }))), 'sink');
    assert.equal(
      policyFor(wrapped(Object.assign(new Error('x'), { code: '60', type: 'UNKNOWN_TABLE' }))),
      'sink',
    );
    assert.equal(
      policyFor(wrapped(Object.assign(new Error('x'), { code: '516', type: 'AUTHENTICATION_FAILED' }))),
      'sink',
    );
    assert.equal(policyFor(withCode('password authentication failed', '28P01')), 'sink');
    assert.equal(policyFor(withCode('permission denied', '42501')), 'sink');
    assert.equal(policyFor(withCode('relation does not exist', '42P01')), 'sink');
    assert.equal(policyFor(new Error('NOAUTH Authentication required.')), 'sink');
    assert.equal(policyFor(new Error('Catalog Error: Table with name x does not exist!')), 'sink');
  });

  it('an analytics table refusing every row is the sink failing, whatever BigQuery text it quotes', () => {
    // The quoted reason names a column `blocked`: read as text it would pass for a lock (transient).
    const refused = new PipelineError(
      ErrorCodes.ANALYTICS_REFUSED,
      'BigQuery refused every row of an insertAll into p.d.events_enriched (3 rows): invalid: Missing required field: blocked.',
      'config',
    );
    assert.equal(policyFor(refused), 'sink');
  });

  it('a deterministic rejection of the data is permanent for rows', () => {
    assert.equal(
      policyFor(
        wrapped(Object.assign(new Error('x'), { code: '27', type: 'CANNOT_PARSE_INPUT_ASSERTION_FAILED' })),
      ),
      'rows',
    );
    assert.equal(policyFor(Object.assign(new Error('x'), { status: 400 })), 'rows');
    assert.equal(policyFor(withCode('invalid input syntax', '22P02')), 'rows');
    assert.equal(policyFor(new Error('Conversion Error: Could not convert string to UUID')), 'rows');
    assert.equal(policyFor(wrapped(new Error('Invalid Input Error: bad json'))), 'rows');
    // kafkajs: a record over the topic's max.message.bytes (sent alone, see ResilientProducer).
    assert.equal(
      policyFor(wrapped(Object.assign(new Error('x'), { type: 'MESSAGE_TOO_LARGE', code: 10 }))),
      'rows',
    );
  });
});
