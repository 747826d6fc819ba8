import type { Notification } from '../notifications';
import { formatTime } from '../time';

export function NotificationFeed({ items }: { items: Notification[] }) {
  return (
    <section className="card feed">
      <div className="card-head">
        <h2>Live feed</h2>
        <span className="count" data-testid="feed-count">
          {items.length}
        </span>
      </div>
      {items.length === 0 ? (
        <p className="empty">No notifications yet. Publish something, here or in another tab.</p>
      ) : (
        <ol className="feed-list" data-testid="feed-list" aria-live="polite">
          {items.map((n) => (
            <li key={n.seq} className="feed-item" data-testid="feed-item">
              <time className="feed-time" dateTime={new Date(n.receivedAt).toISOString()}>
                {formatTime(n.receivedAt)}
              </time>
              <span className="feed-text" data-testid="feed-text" title={n.raw !== n.text ? n.raw : undefined}>
                {n.title !== undefined ? (
                  <>
                    {n.text.endsWith(n.title) ? n.text.slice(0, n.text.length - n.title.length) : `${n.text} `}
                    <strong>{n.title}</strong>
                  </>
                ) : (
                  n.text
                )}
              </span>
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}
