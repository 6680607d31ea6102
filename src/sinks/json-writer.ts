/**
 * JSON text written straight into UTF-8 bytes, the way JSON.stringify writes each value.
 *
 * Why not strings: an event's JSON built by concatenation left ~3 KB of garbage per event (a
 * string per value, the concatenation's links, the flattened text, then its copy as the
 * request's Buffer): in a catch-up that was about half of everything the pipeline allocated,
 * and young-generation collections cost in proportion
 * (bench/results/2026-12-04-s19-json-bytes.md). Here the bytes go into one buffer that is
 * reused from event to event; the caller copies out the result once.
 */
export class JsonWriter {
  private buf: Buffer;
  private at = 0;

  constructor(private readonly initialBytes = 16 * 1024) {
    this.buf = Buffer.allocUnsafe(initialBytes);
  }

  /** Starts over (a buffer grown past MAX_KEPT_BYTES by one huge document is let go). */
  reset(): this {
    this.at = 0;
    if (this.buf.length > MAX_KEPT_BYTES) this.buf = Buffer.allocUnsafe(this.initialBytes);
    return this;
  }

  /** Bytes written since reset(). */
  get length(): number {
    return this.at;
  }

  /** Drops what was written after the first `length` bytes. */
  truncate(length: number): void {
    this.at = Math.min(this.at, length);
  }

  /** The text written since reset(), as a string. */
  text(): string {
    return this.buf.toString('utf8', 0, this.at);
  }

  /** The bytes written since reset(), as a Buffer of their own. */
  bytes(): Buffer {
    const out = Buffer.allocUnsafe(this.at);
    this.buf.copy(out, 0, 0, this.at);
    return out;
  }

  /** `text` as it is: JSON syntax (`{"key":`, `,`) or a JSON document's own text. */
  raw(text: string): void {
    const n = text.length;
    this.room(3 * n); // UTF-8's most per UTF-16 unit
    const b = this.buf;
    let at = this.at;
    for (let i = 0; i < n; i++) {
      const c = text.charCodeAt(i);
      if (c >= 0x80) {
        this.at += b.write(text, this.at, 'utf8');
        return;
      }
      b[at++] = c;
    }
    this.at = at;
  }

  /**
   * JSON.stringify of a string: most need no escape (JSON.stringify escapes `"`, `\`, the
   * control characters and lone surrogates) and are written between quotes byte by byte; any
   * other (non-ASCII included) takes JSON.stringify's text, which is then written as UTF-8.
   */
  string(v: string): void {
    const n = v.length;
    this.room(n + 2);
    const b = this.buf;
    let at = this.at;
    b[at++] = 0x22;
    for (let i = 0; i < n; i++) {
      const c = v.charCodeAt(i);
      if (c < 0x20 || c === 0x22 || c === 0x5c || c >= 0x80) {
        this.raw(NEEDS_ESCAPE.test(v) ? JSON.stringify(v) : `"${v}"`);
        return;
      }
      b[at++] = c;
    }
    b[at++] = 0x22;
    this.at = at;
  }

  /** A number as JSON.stringify writes it (NaN and ±Infinity as null). */
  number(v: number): void {
    if (!Number.isFinite(v)) return this.raw('null');
    if (!Number.isSafeInteger(v)) return this.raw(String(v));
    // A safe integer's digits, without a string for them (-0 is written 0, as String(-0) is).
    this.room(17);
    const b = this.buf;
    if (v < 0) {
      b[this.at++] = 0x2d;
      v = -v;
    }
    let digits = 1;
    for (let rest = v; rest >= 10; rest = Math.floor(rest / 10)) digits++;
    let at = this.at + digits;
    this.at = at;
    do {
      b[--at] = 0x30 + (v % 10);
      v = Math.floor(v / 10);
    } while (v > 0);
  }

  /**
   * A string, number or null as JSON.stringify writes it; false (nothing written) for any
   * other value, which the caller writes another way.
   */
  value(v: unknown): boolean {
    if (v === null) this.raw('null');
    else if (typeof v === 'string') this.string(v);
    else if (typeof v === 'number') this.number(v);
    else return false;
    return true;
  }

  private room(bytes: number): void {
    if (this.at + bytes <= this.buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(2 * this.buf.length, this.at + bytes));
    this.buf.copy(grown, 0, 0, this.at);
    this.buf = grown;
  }
}

/** A writer keeps at most this much buffer between documents. */
const MAX_KEPT_BYTES = 1024 * 1024;

// eslint-disable-next-line no-control-regex -- the control characters are what JSON escapes
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;
