#!/usr/bin/env node
// The package's bin: runs the compiled CLI (built by `npm install` via the prepare script).
//
// DuckDB's bundled allocator (jemalloc) keeps freed pages for a second before it returns them,
// which at our write pattern held 50-65 MB of RSS (bench/results/2026-12-02-issue13-window-and-allocator.md).
// It reads its options once, when libduckdb loads, so they are set here, before any import
// reaches it; a value the user set (even empty) wins.
process.env.DUCKDB_JE_MALLOC_CONF ??= 'dirty_decay_ms:0,muzzy_decay_ms:0';
await import('../dist/cli/main.js');
