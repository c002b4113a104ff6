// Build one package twice with tsc: ES modules (dist/esm) and CommonJS (dist/cjs), each with
// its .d.ts files. No bundler: the packages have no runtime dependency to inline.
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';

const dir = resolve(process.argv[2] ?? '.');
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
rmSync(join(dir, 'dist'), { recursive: true, force: true });
for (const [format, module, resolution] of [
  ['esm', 'ES2020', 'Bundler'],
  ['cjs', 'CommonJS', 'Node10'],
]) {
  const out = join(dir, 'dist', format);
  execFileSync(
    process.execPath,
    [tsc, '-p', join(dir, 'tsconfig.json'), '--outDir', out, '--module', module, '--moduleResolution', resolution],
    { stdio: 'inherit' },
  );
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'package.json'), JSON.stringify({ type: format === 'esm' ? 'module' : 'commonjs' }) + '\n');
}
