import { describeBadge, type Badge } from '../feed';

function tooltip(badge: Badge): string | undefined {
  switch (badge.kind) {
    case 'reconnecting': {
      const why = badge.code !== null ? `Connection lost (close code ${badge.code}); ` : '';
      const what = badge.dialing
        ? 'connecting…'
        : `next attempt in ${badge.delayMs !== null ? `${(badge.delayMs / 1000).toFixed(1)} s` : 'a moment'}`;
      return `${why}${what}`;
    }
    case 'recovered':
      return 'Reconnected: every notification published while this tab was disconnected has been replayed.';
    case 'unrecovered':
      return 'Reconnected, but the notifications published meanwhile could not be replayed (history lost or too old); the content list was reloaded.';
    case 'gap':
      return badge.reason === 'epoch_changed'
        ? `The gateway's history of ${badge.channel} was reset (e.g. Redis restarted empty): notifications published before may be missing; the content list was reloaded.`
        : `The gateway could not replay notifications of ${badge.channel} it missed during its own outage; the content list was reloaded.`;
    case 'stopped':
      return `Closed by the server with code ${badge.code}${badge.reason ? `: ${badge.reason}` : ''}. Not retrying automatically.`;
    default:
      return undefined;
  }
}

export function ConnectionBadge({ badge, onRetry }: { badge: Badge; onRetry: () => void }) {
  const retryable = badge.kind === 'stopped' || (badge.kind === 'reconnecting' && !badge.dialing);
  return (
    <span className="badge-wrap">
      <span
        className={`badge badge-${badge.kind}`}
        data-testid="connection-badge"
        data-state={badge.kind}
        title={tooltip(badge)}
        role="status"
      >
        <span className="badge-dot" aria-hidden="true" />
        {describeBadge(badge)}
      </span>
      {retryable && (
        <button type="button" className="link-button" onClick={onRetry} data-testid="retry-button">
          {badge.kind === 'stopped' ? 'Reconnect' : 'Retry now'}
        </button>
      )}
    </span>
  );
}
