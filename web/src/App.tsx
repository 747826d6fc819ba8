import { useCallback, useEffect, useRef, useState } from 'react';
import { listContent, type Content } from './api';
import { useLiveFeed } from './useLiveFeed';
import { ConnectionBadge } from './components/ConnectionBadge';
import { ContentForm } from './components/ContentForm';
import { ContentList } from './components/ContentList';
import { NotificationFeed } from './components/NotificationFeed';

export function App() {
  // The gateway instance comes from the `connected` frame of the Herald connection:
  // a reconnect may land on another instance behind a load balancer.
  const { badge, instanceId, online, feed, contentVersion, retryNow } = useLiveFeed();
  const [content, setContent] = useState<Content[]>([]);
  const [contentError, setContentError] = useState<string | null>(null);
  const [contentLoading, setContentLoading] = useState(true);

  const refreshContent = useCallback(() => {
    listContent(20)
      .then((page) => {
        setContent(page.items);
        setContentError(null);
      })
      .catch((e: unknown) => setContentError(e instanceof Error ? e.message : String(e)))
      .finally(() => setContentLoading(false));
  }, []);

  useEffect(refreshContent, [refreshContent]);

  // New content (here, in another tab, or replayed after a reconnect), a
  // (re)subscribe or a gap that could not be replayed: refresh the list
  // (debounced, so bursts coalesce).
  const debounce = useRef<ReturnType<typeof setTimeout> | null>(null);
  useEffect(() => {
    if (contentVersion === 0) return;
    if (debounce.current) clearTimeout(debounce.current);
    debounce.current = setTimeout(refreshContent, 250);
    return () => {
      if (debounce.current) clearTimeout(debounce.current);
    };
  }, [contentVersion, refreshContent]);

  return (
    <div className="app">
      <header className="topbar">
        <div className="brand">
          <span className="brand-mark" aria-hidden="true" />
          <h1>Herald</h1>
          <span className="brand-sub">real-time notifications</span>
        </div>
        <div className="status">
          <span className="status-item">
            <span className="status-label">Gateway</span>
            <code
              className={`instance${instanceId !== null && !online ? ' instance-stale' : ''}`}
              data-testid="instance-label"
              title={instanceId !== null && !online ? 'Last connected instance' : undefined}
            >
              {instanceId ?? '…'}
            </code>
          </span>
          <ConnectionBadge badge={badge} onRetry={retryNow} />
        </div>
      </header>

      <main className="layout">
        <div className="area-form">
          <ContentForm onCreated={refreshContent} />
        </div>
        <div className="area-feed">
          <NotificationFeed items={feed} />
        </div>
        <div className="area-list">
          <ContentList items={content} loading={contentLoading} error={contentError} />
        </div>
      </main>

      <footer className="footer">
        Open this page in several tabs: content created in one appears in all of them.
      </footer>
    </div>
  );
}
