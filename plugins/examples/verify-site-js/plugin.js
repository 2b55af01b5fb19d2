// verify-site: checks a rendered site before it goes live (run it between build and rollout).
//
// A JavaScript phase plugin (see docs/writing-plugins.md):
//
//   [phases.migrate_pre]   # or any phase between build and rollout
//   plugin = "target/wasm-plugins/examples/verify-site-js.wasm"
//   config = { must_contain = "version {{version}}", require_vars = "greeting" }
//   [phases.migrate_pre.grants]
//   read = ["public"]
//
// The site is config.site, else the `path` output of the phase config.from (default `build`,
// which builtin:render fills in). The phase fails unless the site's index (config.index, default
// index.html) exists, is not empty, contains config.must_contain (with {{version}},
// {{environment}}, {{release_id}}, {{commit}} and {{var.NAME}} substituted) and the value of
// every var named in config.require_vars (comma-separated). It reports how many files and bytes
// the site has.

import { log } from 'stagecraft:phase/host@0.1.1';
import { getDirectories } from 'wasi:filesystem/preopens@0.2.12';

const VERSION = '0.1.0';

/// A phase error: thrown objects with a `message` become the phase's error.
class PhaseError extends Error {
  constructor(message, details) {
    super(message);
    this.details = details;
  }
}

function substitute(text, ctx, vars) {
  const values = {
    version: ctx.release.version,
    environment: ctx.release.environment,
    release_id: ctx.release.id,
    commit: ctx.release.commit,
  };
  for (const [key, value] of vars) values[`var.${key}`] = value;
  return text.replace(/\{\{([a-zA-Z0-9_.-]+)\}\}/g, (whole, key) =>
    key in values ? values[key] : whole,
  );
}

/// Split a guest path (`public/releases/v2`) into the preopened directory that contains it and
/// the rest. Preopens are named as in the manifest's grants (`.` is the project root).
function locate(path) {
  const clean = path.replace(/^\.\//, '').replace(/\/+$/, '');
  let best = null;
  for (const [dir, name] of getDirectories()) {
    if (name === '.' && (!best || best.name === '.')) {
      best = { dir, name, rest: clean || '.' };
    } else if (clean === name || clean.startsWith(name + '/')) {
      if (!best || best.name === '.' || name.length > best.name.length) {
        best = { dir, name, rest: clean === name ? '.' : clean.slice(name.length + 1) };
      }
    }
  }
  if (!best) {
    throw new PhaseError(
      `${path} is not readable: add it (or a directory containing it) to this phase's read grant`,
    );
  }
  return best;
}

function open(path, directory) {
  const { dir, rest } = locate(path);
  try {
    return dir.openAt({ symlinkFollow: false }, rest, { directory }, { read: true });
  } catch (e) {
    throw new PhaseError(`cannot open ${path}: ${e.payload ?? e.message ?? e}`);
  }
}

function readText(path) {
  const file = open(path, false);
  const size = file.stat().size;
  const chunks = [];
  let offset = 0n;
  while (offset < size) {
    const [bytes, end] = file.read(65536n, offset);
    chunks.push(bytes);
    offset += BigInt(bytes.length);
    if (end || bytes.length === 0) break;
  }
  const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  return new TextDecoder().decode(all);
}

/// Files and bytes under a directory, recursively.
function tally(path) {
  const dir = open(path, true);
  const stream = dir.readDirectory();
  let files = 0;
  let bytes = 0n;
  for (let entry = stream.readDirectoryEntry(); entry; entry = stream.readDirectoryEntry()) {
    const child = `${path}/${entry.name}`;
    if (entry.type === 'directory') {
      const sub = tally(child);
      files += sub.files;
      bytes += sub.bytes;
    } else if (entry.type === 'regular-file') {
      files += 1;
      bytes += dir.statAt({}, entry.name).size;
    }
  }
  return { files, bytes };
}

export const phase = {
  describe() {
    return {
      name: 'verify-site',
      version: VERSION,
      description:
        'Checks a rendered site (config.site, or the `path` output of config.from) before the ' +
        'switch: the index exists and contains config.must_contain and config.require_vars.',
      phases: [],
    };
  },

  run(ctx) {
    const config = new Map(ctx.config);
    const vars = new Map(ctx.vars);
    const from = config.get('from') ?? 'build';
    let site = config.get('site');
    if (!site) {
      const earlier = ctx.earlierOutputs.find((p) => p.phase === from);
      site = earlier && new Map(earlier.outputs).get('path');
    }
    if (!site) {
      throw new PhaseError(
        `no site to verify: set config.site, or run a phase \`${from}\` that reports a \`path\` ` +
          'output (builtin:render does) before this one',
      );
    }
    const index = `${site}/${config.get('index') ?? 'index.html'}`;
    const text = readText(index);
    if (text.trim() === '') throw new PhaseError(`${index} is empty`);

    const expected = [];
    if (config.get('must_contain')) {
      expected.push(substitute(config.get('must_contain'), ctx, ctx.vars));
    }
    for (const name of (config.get('require_vars') ?? '').split(',').map((s) => s.trim())) {
      if (!name) continue;
      if (!vars.has(name)) {
        throw new PhaseError(
          `config.require_vars names ${name}, which is not in environment ` +
            `${ctx.release.environment}'s vars`,
        );
      }
      expected.push(vars.get(name));
    }
    const missing = expected.filter((needle) => !text.includes(needle));
    if (missing.length > 0) {
      throw new PhaseError(
        `${index} does not contain ${missing.map((m) => JSON.stringify(m)).join(', ')}`,
        `first 400 characters of ${index}:\n${text.slice(0, 400)}`,
      );
    }
    const { files, bytes } = tally(site);
    log('info', `${index} has ${expected.length} expected strings; ${files} files in ${site}`);
    return {
      outcome: { tag: 'completed' },
      summary: `verified ${site}: ${files} files, ${expected.length} checks passed`,
      outputs: [
        ['site', site],
        ['files', String(files)],
        ['bytes', String(bytes)],
      ],
    };
  },
};
