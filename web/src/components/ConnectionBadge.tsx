import { describeState, type ConnectionState } from '../notifications';

export function ConnectionBadge({ state, onRetry }: { state: ConnectionState; onRetry: () => void }) {
  const text = describeState(state);
  const title =
    state.kind === 'reconnecting'
      ? `Connection lost (close code ${state.lastCode}); ${state.phase === 'waiting' ? 'waiting to retry' : 'dialing'}`
      : state.kind === 'stopped'
        ? `Closed by server with code ${state.code}${state.reason ? `: ${state.reason}` : ''}. Not retrying automatically.`
        : undefined;
  const retryable = state.kind === 'stopped' || (state.kind === 'reconnecting' && state.phase === 'waiting');
  return (
    <span className="badge-wrap">
      <span className={`badge badge-${state.kind}`} data-testid="connection-badge" data-state={state.kind} title={title} role="status">
        <span className="badge-dot" aria-hidden="true" />
        {text}
      </span>
      {retryable && (
        <button type="button" className="link-button" onClick={onRetry} data-testid="retry-button">
          {state.kind === 'stopped' ? 'Reconnect' : 'Retry now'}
        </button>
      )}
    </span>
  );
}
