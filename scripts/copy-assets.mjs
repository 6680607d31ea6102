// tsc compiles only TypeScript: copy the Lua scripts and HTML assets beside their modules in dist/.
import { cpSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
function walk(dir) {
  for (const name of readdirSync(dir)) {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) walk(full);
    else if (/\.(lua|html|css|sql)$/.test(name)) {
      cpSync(full, path.join(root, 'dist', path.relative(path.join(root, 'src'), full)));
    }
  }
}
walk(path.join(root, 'src'));
