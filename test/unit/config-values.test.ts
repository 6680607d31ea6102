import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InvalidArgumentError } from 'commander';
import { integerFlag, integerOption } from '../../src/cli/common.js';
import { assertSafeHttpExposure, isLoopback, loadConfig } from '../../src/config.js';
import { readInteger } from '../../src/config-values.js';
import { PipelineError } from '../../src/errors.js';
import { listenFailure } from '../../src/server/listen.js';

/** The one config line loadConfig throws for `env`, or null when it loads. */
function configLine(env: Record<string, string>): string | null {
  try {
    loadConfig({}, env);
    return null;
  } catch (err) {
    assert.ok(err instanceof PipelineError && err.kind === 'config', String(err));
    assert.doesNotMatch(err.oneLine(), /\n/);
    return err.oneLine();
  }
}

describe('integer settings and flags: an optional sign and decimal digits, nothing else', () => {
  it('refuses hex, spaces, exponents and blanks that Number() would read', () => {
    for (const port of ['0x7073', ' 28787 ', '2.8787e4', ' ', '28787.0', '1_000', 'Infinity']) {
      assert.match(
        configLine({ PORT: port }) ?? 'loaded',
        /^EP_ERR_CONFIG: PORT \/ --port: must be an integer from 0 to 65535/,
        port,
      );
    }
    assert.match(configLine({ BATCH_MAX_ROWS: '0x10' }) ?? 'loaded', /BATCH_MAX_ROWS.*positive integer/);
    assert.match(configLine({ DUCKDB_THREADS: '1e1' }) ?? 'loaded', /DUCKDB_THREADS/);
    assert.match(configLine({ HEARTBEAT_INTERVAL_MS: ' 5' }) ?? 'loaded', /HEARTBEAT_INTERVAL_MS/);
    assert.match(configLine({ LAG_WARN_SECONDS: '0x1e' }) ?? 'loaded', /LAG_WARN_SECONDS/);
  });

  it('takes plain decimal integers, a sign, and numbers given by code', () => {
    assert.equal(loadConfig({}, { PORT: '28787' }).port, 28787);
    assert.equal(loadConfig({}, { PORT: '+80' }).port, 80);
    assert.equal(loadConfig({ port: 0 }, {}).port, 0);
    assert.equal(loadConfig({}, { LAG_WARN_SECONDS: '2.5' }).lagWarnSeconds, 2.5);
    assert.equal(readInteger('-3', -5), -3);
    assert.throws(() => readInteger('9007199254740993', 0), RangeError);
  });

  it('flags share the rule: commander usage errors and one config line', () => {
    assert.equal(integerFlag('--port', 0, 65535)('8788'), 8788);
    assert.throws(() => integerFlag('--port', 0, 65535)('0x2254'), InvalidArgumentError);
    assert.throws(() => integerFlag('--count', 1)(' 5'), InvalidArgumentError);
    assert.equal(integerOption('10', '--limit', 1, 1000), 10);
    assert.throws(
      () => integerOption('1e2', '--limit', 1, 1000),
      (err: unknown) => err instanceof PipelineError && err.kind === 'config' && /--limit/.test(err.message),
    );
  });
});

describe('URL settings', () => {
  it('EXTERNAL_URL must be http: or https:', () => {
    assert.match(
      configLine({ EXTERNAL_URL: 'ftp://files.example/in' }) ?? 'loaded',
      /EXTERNAL_URL.*http:\/\/ or https:\/\//,
    );
    assert.match(configLine({ EXTERNAL_URL: 'file:///etc/passwd' }) ?? 'loaded', /EXTERNAL_URL/);
    // Not URLs at all: the same line naming the setting (not a bare "Invalid URL").
    for (const url of ['notaurl', 'http://user:pw@[bad', 'http://', 'https://'])
      assert.match(
        configLine({ EXTERNAL_URL: url }) ?? 'loaded',
        /EXTERNAL_URL.*http:\/\/ or https:\/\//,
        url,
      );
    assert.equal(configLine({ EXTERNAL_URL: 'https://hooks.example/in' }), null);
    assert.equal(configLine({ EXTERNAL_URL: 'http://127.0.0.1:8788/events' }), null);
  });

  it("REDIS_URL's path is empty or a decimal database number", () => {
    for (const url of [
      'redis://127.0.0.1:6379/abc',
      'redis://127.0.0.1:6379/2x',
      'redis://127.0.0.1:6379/-1',
      'redis://h:6379?db=x',
    ])
      assert.match(configLine({ REDIS_URL: url }) ?? 'loaded', /REDIS_URL.*database number/, url);
    assert.doesNotMatch(configLine({ REDIS_URL: 'redis://u:hunter2@127.0.0.1:6379/abc' }) ?? '', /hunter2/);
    for (const url of [
      'redis://127.0.0.1:6379',
      'redis://127.0.0.1:6379/',
      'redis://127.0.0.1:6379/99',
      'rediss+cluster://a:1,b:2',
    ])
      assert.equal(configLine({ REDIS_URL: url }), null, url);
  });
});

describe('isLoopback: exact loopback addresses only', () => {
  it('takes 127.0.0.0/8 literals, ::1, localhost and IPv4-mapped loopback', () => {
    for (const host of [
      '127.0.0.1',
      '127.1.2.3',
      '127.255.255.255',
      '::1',
      '[::1]',
      'localhost',
      'LOCALHOST',
      '::ffff:127.0.0.1',
    ])
      assert.equal(isLoopback(host), true, host);
  });
  it('refuses names and addresses that only start like one', () => {
    for (const host of [
      '127.0.0.1.example',
      '127.evil.com',
      '127.0.0.256',
      '127.0.0',
      '0.0.0.0',
      '::',
      '::ffff:10.0.0.1',
      'localhost.example',
      '10.0.0.1',
    ])
      assert.equal(isLoopback(host), false, host);
  });
  it('so HOST=127.0.0.1.example needs API_TOKEN to serve HTTP, of at least 8 characters', () => {
    const exposure = (env: Record<string, string>) => {
      try {
        assertSafeHttpExposure(loadConfig({}, env));
        return 'ok';
      } catch (err) {
        return (err as PipelineError).oneLine();
      }
    };
    assert.match(exposure({ HOST: '127.0.0.1.example' }), /not loopback and API_TOKEN is not set/);
    assert.match(exposure({ HOST: '0.0.0.0', API_TOKEN: 'short' }), /API_TOKEN.*at least 8 characters/);
    assert.equal(exposure({ HOST: '0.0.0.0', API_TOKEN: 'long-enough-token' }), 'ok');
    // Commands that serve nothing (top, migrate, generate...) load the same settings fine.
    assert.equal(configLine({ HOST: '0.0.0.0', API_TOKEN: 'short' }), null);
  });
  it('HOST=[::1] (bracketed as in URLs) is the IPv6 loopback, and a HOST that is no address here is one line', () => {
    assert.equal(loadConfig({}, { HOST: '[::1]' }).host, '::1');
    const refused = listenFailure(
      Object.assign(new Error('getaddrinfo ENOTFOUND x'), { code: 'ENOTFOUND' }),
      'x',
      8787,
      '',
    );
    assert.match(
      (refused as PipelineError).oneLine(),
      /EP_ERR_CONFIG: cannot listen on x \(ENOTFOUND\): not an address of this machine/,
    );
  });
});
