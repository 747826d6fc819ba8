import type { Content } from '../api';
import { formatDateTime } from '../time';

export function ContentList({ items, loading, error }: { items: Content[]; loading: boolean; error: string | null }) {
  return (
    <section className="card">
      <h2>Recent content</h2>
      {error && (
        <p className="form-error" data-testid="content-error">
          Could not load content: {error}
        </p>
      )}
      {loading && !error ? (
        <p className="empty">Loading…</p>
      ) : items.length === 0 && !error ? (
        <p className="empty">Nothing published yet.</p>
      ) : (
        <ul className="content-list" data-testid="content-list">
          {items.map((c) => (
            <li key={c.id} className="content-item" data-testid="content-item">
              <div className="content-head">
                <span className="content-title">{c.title}</span>
                <span className="content-meta">
                  #{c.id} · <time dateTime={c.created_at}>{formatDateTime(c.created_at)}</time>
                </span>
              </div>
              {c.body && <p className="content-body">{c.body}</p>}
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
