import { useEffect, useState } from 'react';
import { LiveFeed, SimulatedNetwork, type LiveSnapshot } from './feed';

/**
 * What `window.__herald` holds: the page's client, and a switch that cuts
 * the network under it (for the e2e test and for trying recovery by hand):
 *
 *   __herald.goOffline()   // sockets drop (1006), new ones fail: the badge reconnects
 *   __herald.goOnline()    // the next attempt (made at once) connects and recovers
 */
export interface HeraldDebugHook {
  feed: LiveFeed;
  network: SimulatedNetwork;
  goOffline: () => void;
  goOnline: () => void;
}

declare global {
  interface Window {
    __herald?: HeraldDebugHook;
  }
}

const INITIAL: LiveSnapshot = { badge: { kind: 'connecting' }, instanceId: null, online: false, feed: [], contentVersion: 0 };

export interface LiveFeedView extends LiveSnapshot {
  retryNow: () => void;
}

/**
 * React binding for LiveFeed: one Herald connection per mounted component,
 * started on mount and closed on unmount (safe under StrictMode's double mount).
 */
export function useLiveFeed(): LiveFeedView {
  const [feed, setFeed] = useState<LiveFeed | null>(null);
  const [snapshot, setSnapshot] = useState<LiveSnapshot>(INITIAL);

  useEffect(() => {
    const network = new SimulatedNetwork();
    const live = new LiveFeed({ WebSocket: network.WebSocket });
    const off = live.onChange(setSnapshot);
    // The client itself reconnects at once when the browser comes back online or the
    // tab visible again; the simulated network's offline switch is not the browser's,
    // so coming back from it wakes the client by hand.
    const wake = () => live.skipBackoff();
    const hook: HeraldDebugHook = {
      feed: live,
      network,
      goOffline: () => network.setOffline(true),
      goOnline: () => {
        network.setOffline(false);
        wake();
      },
    };
    window.__herald = hook;
    setFeed(live);
    live.start();
    setSnapshot(live.current);
    return () => {
      if (window.__herald === hook) delete window.__herald;
      off();
      live.stop();
    };
  }, []);

  return { ...snapshot, retryNow: () => feed?.retryNow() };
}
