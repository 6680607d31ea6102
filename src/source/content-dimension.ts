import type pg from 'pg';
import type { ContentInfo } from '../domain/types.js';

/**
 * The `content` table held in memory: loaded by snapshot at start, kept current by the
 * same change stream, with a direct lookup for ids it has never seen. A lookup that finds
 * nothing is remembered as absent; the stream will bring the row if it is inserted later.
 */
export class ContentDimension {
  private readonly rows = new Map<string, ContentInfo | null>();

  constructor(private readonly pool: pg.Pool) {}

  get size(): number {
    return this.rows.size;
  }

  async loadSnapshot(): Promise<number> {
    const { rows } = await this.pool.query<ContentInfo>(
      'SELECT id::text, slug, title, content_type, length_seconds FROM content',
    );
    for (const row of rows) this.rows.set(row.id, row);
    return rows.length;
  }

  /** Ids of the content rows known to exist. */
  knownIds(): string[] {
    return [...this.rows].filter(([, row]) => row !== null).map(([id]) => id);
  }

  /** Known content, `null` when known to be absent, `undefined` when never seen. */
  peek(id: string): ContentInfo | null | undefined {
    return this.rows.get(id);
  }

  upsert(change: Partial<ContentInfo> & { id: string }): void {
    const previous = this.rows.get(change.id);
    this.rows.set(change.id, {
      id: change.id,
      slug: change.slug !== undefined ? change.slug : (previous?.slug ?? null),
      title: change.title !== undefined ? change.title : (previous?.title ?? null),
      content_type:
        change.content_type !== undefined ? change.content_type : (previous?.content_type ?? null),
      length_seconds:
        change.length_seconds !== undefined ? change.length_seconds : (previous?.length_seconds ?? null),
    });
  }

  delete(id: string): void {
    this.rows.set(id, null);
  }

  /** Fetches ids never seen before; remembers misses as absent. */
  async lookup(ids: string[]): Promise<void> {
    const unseen = [...new Set(ids)].filter((id) => !this.rows.has(id));
    if (unseen.length === 0) return;
    const { rows } = await this.pool.query<ContentInfo>(
      'SELECT id::text, slug, title, content_type, length_seconds FROM content WHERE id = ANY($1::uuid[])',
      [unseen],
    );
    for (const id of unseen) this.rows.set(id, null);
    for (const row of rows) this.rows.set(row.id, row);
  }
}
