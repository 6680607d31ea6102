import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, it } from 'node:test';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..');
// `docker compose` (the v2 plugin) when present, else Debian's standalone docker-compose (1.29).
const plugin = spawnSync('docker', ['compose', 'version'], { encoding: 'utf8' });
const standalone = spawnSync('docker-compose', ['version'], { encoding: 'utf8' });
const compose: string[] | null =
  !plugin.error && plugin.status === 0
    ? ['docker', 'compose']
    : !standalone.error && standalone.status === 0
      ? ['docker-compose']
      : null;
const skip = compose
  ? false
  : `neither the docker compose plugin nor docker-compose is installed (docker compose version: ${(plugin.error?.message ?? plugin.stderr ?? '').trim().split('\n')[0]}); docker-compose.yml is unvalidated on this machine`;
if (skip) process.stdout.write(`# docker-compose.yml: skipped: ${skip}\n`);

// The only validation possible without a Docker engine: compose parses and resolves the file.
describe('docker-compose.yml', { skip }, () => {
  it('is a valid compose file with Postgres, Redis, Redpanda, ClickHouse, capture and 2 workers', () => {
    const [bin, ...pre] = compose!;
    // v1 prints YAML only; v2 can print JSON. Both resolve anchors, env and dependencies.
    const args =
      bin === 'docker'
        ? [...pre, '-f', 'docker-compose.yml', 'config', '--format', 'json']
        : ['-f', 'docker-compose.yml', 'config'];
    const r = spawnSync(bin, args, { cwd: ROOT, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    process.stdout.write(
      `# docker-compose.yml validated with \`${compose!.join(' ')} config\` only (no Docker engine here)\n`,
    );
    const config = (bin === 'docker' ? JSON.parse(r.stdout) : yamlServices(r.stdout)) as {
      services: Record<string, { deploy?: { replicas?: number }; command?: string[] }>;
    };
    for (const name of ['postgres', 'redis', 'redpanda', 'clickhouse', 'capture', 'worker'])
      assert.ok(config.services[name], `service ${name}`);
    assert.equal(Number(config.services.worker.deploy?.replicas), 2);
    assert.ok(config.services.postgres.command?.includes('wal_level=logical'));
  });
});

/** Just enough of the resolved YAML (docker-compose 1.x) to check services, replicas and the postgres command. */
function yamlServices(text: string) {
  const services: Record<string, { deploy?: { replicas?: number }; command?: string[] }> = {};
  let section = '';
  let current: string | null = null;
  let inCommand = false;
  for (const line of text.split('\n')) {
    if (/^\S/.test(line)) section = line.replace(':', '').trim();
    if (section !== 'services') continue;
    const service = /^ {2}([a-z-]+):$/.exec(line);
    if (service) {
      current = service[1];
      services[current] = {};
      inCommand = false;
      continue;
    }
    if (!current) continue;
    if (/^ {4}command:/.test(line)) {
      inCommand = true;
      services[current].command = [];
      continue;
    }
    if (inCommand && /^ {4}- /.test(line))
      services[current].command!.push(line.replace(/^ {4}- /, '').trim());
    else if (/^ {4}\S/.test(line)) inCommand = false;
    const replicas = /^ {6}replicas: (\d+)/.exec(line);
    if (replicas) services[current].deploy = { replicas: Number(replicas[1]) };
  }
  return { services };
}
