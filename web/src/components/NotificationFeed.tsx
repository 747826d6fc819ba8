import type { FeedItem } from '../feed';
import { formatTime } from '../time';

export function NotificationFeed({ items }: { items: FeedItem[] }) {
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
            <li
              key={n.seq}
              className={`feed-item${n.missed ? ' feed-item-missed' : ''}`}
              data-testid="feed-item"
              data-channel={n.channel}
              data-missed={n.missed ? 'true' : undefined}
            >
              <time className="feed-time" dateTime={new Date(n.time).toISOString()} title="Published at">
                {formatTime(n.time)}
              </time>
              <span className="feed-text" data-testid="feed-text" title={`${n.channel}: ${n.raw}`}>
                {n.title !== undefined ? (
                  <>
                    {n.text.endsWith(n.title) ? n.text.slice(0, n.text.length - n.title.length) : `${n.text} `}
                    <strong>{n.title}</strong>
                  </>
                ) : (
                  n.text
                )}
              </span>
              {n.missed && (
                <span className="feed-tag" data-testid="feed-missed-tag" title="Published while this tab was disconnected; replayed on reconnect">
                  missed
                </span>
              )}
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}
