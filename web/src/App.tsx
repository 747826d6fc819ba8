import { useCallback, useEffect, useRef, useState } from 'react';
import { getHealth, listContent, type Content } from './api';
import { useNotifications } from './useNotifications';
import { ConnectionBadge } from './components/ConnectionBadge';
import { ContentForm } from './components/ContentForm';
import { ContentList } from './components/ContentList';
import { NotificationFeed } from './components/NotificationFeed';

export function App() {
  const { state, feed, retryNow } = useNotifications();
  const [instance, setInstance] = useState<string | null>(null);
  const [instanceError, setInstanceError] = useState<string | null>(null);
  const [content, setContent] = useState<Content[]>([]);
  const [contentError, setContentError] = useState<string | null>(null);
  const [contentLoading, setContentLoading] = useState(true);

  // Which gateway instance are we talking to? Asked again after every (re)connect,
  // since a reconnect may land on another instance behind a load balancer.
  const connected = state.kind === 'connected';
  useEffect(() => {
    let cancelled = false;
    getHealth()
      .then((h) => {
        if (cancelled) return;
        setInstance(h.instance_id);
        setInstanceError(null);
      })
      .catch((e: unknown) => {
        if (!cancelled) setInstanceError(e instanceof Error ? e.message : String(e));
      });
    return () => {
      cancelled = true;
    };
  }, [connected]);

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

  // Another tab published something: refresh the list (debounced, bursts coalesce).
  const debounce = useRef<ReturnType<typeof setTimeout> | null>(null);
  const newest = feed[0]?.seq;
  useEffect(() => {
    if (newest === undefined) return;
    if (debounce.current) clearTimeout(debounce.current);
    debounce.current = setTimeout(refreshContent, 250);
    return () => {
      if (debounce.current) clearTimeout(debounce.current);
    };
  }, [newest, refreshContent]);

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
            <code className="instance" data-testid="instance-label" title={instanceError ?? undefined}>
              {instance ?? (instanceError ? 'unavailable' : '…')}
            </code>
          </span>
          <ConnectionBadge state={state} onRetry={retryNow} />
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
