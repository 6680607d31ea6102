import v8 from 'node:v8';

/**
 * Heap growth for the long-running commands (run, work, capture, demo). By default V8 lets
 * the old generation grow to up to four times what survived the last full collection before
 * collecting again; in a catch-up every in-flight batch survives a few young collections, so
 * the heap swung between ~70 and ~200 MB and the process peaked near 480 MB RSS (bench,
 * catch-up of 200,000 events). Growing by at most half of the live size per full collection
 * kept the peak at 330–370 MB for about the same CPU per event (the full collections mark
 * concurrently). The flag is read at every heap-limit computation, so it takes effect when
 * set at start-up; `--heap-growing-percent` is refused in NODE_OPTIONS, hence here.
 */
export const HEAP_GROWING_PERCENT = 50;

export function keepHeapSmall(): void {
  v8.setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
}
