import { useEffect, useState } from 'react';
import { NotificationClient, defaultNotificationsUrl, type ConnectionState, type Notification } from './notifications';

const MAX_FEED = 100;

export interface NotificationsView {
  state: ConnectionState;
  /** Newest first, at most MAX_FEED items. */
  feed: Notification[];
  retryNow: () => void;
}

/**
 * React binding for NotificationClient: one client per mounted component,
 * started on mount and stopped on unmount (safe under StrictMode's double mount).
 */
export function useNotifications(url: string = defaultNotificationsUrl()): NotificationsView {
  const [client, setClient] = useState<NotificationClient | null>(null);
  const [state, setState] = useState<ConnectionState>({ kind: 'connecting' });
  const [feed, setFeed] = useState<Notification[]>([]);

  useEffect(() => {
    const c = new NotificationClient({ url });
    const offState = c.onState(setState);
    const offMsg = c.onMessage((n) => setFeed((prev) => [n, ...prev].slice(0, MAX_FEED)));
    // Coming back online or to the tab: don't sit out the rest of a long backoff.
    const wake = () => c.retryNow();
    const onVisible = () => {
      if (document.visibilityState === 'visible' && c.getState().kind === 'reconnecting') wake();
    };
    window.addEventListener('online', wake);
    document.addEventListener('visibilitychange', onVisible);
    setClient(c);
    c.start();
    return () => {
      window.removeEventListener('online', wake);
      document.removeEventListener('visibilitychange', onVisible);
      offState();
      offMsg();
      c.stop();
    };
  }, [url]);

  return { state, feed, retryNow: () => client?.retryNow() };
}
