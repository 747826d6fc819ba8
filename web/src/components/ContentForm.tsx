import { useState, type FormEvent } from 'react';
import { ApiError, createContent, type Content } from '../api';

type FieldErrors = Partial<Record<'title' | 'body', string>>;

export function ContentForm({ onCreated }: { onCreated: (c: Content) => void }) {
  const [title, setTitle] = useState('');
  const [body, setBody] = useState('');
  const [busy, setBusy] = useState(false);
  const [fieldErrors, setFieldErrors] = useState<FieldErrors>({});
  const [formError, setFormError] = useState<string | null>(null);
  const [created, setCreated] = useState<Content | null>(null);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setFieldErrors({});
    setFormError(null);
    setCreated(null);
    try {
      // No client-side validation on purpose: the server's rules are the source of truth.
      const c = await createContent(title, body);
      setCreated(c);
      setTitle('');
      setBody('');
      onCreated(c);
    } catch (err) {
      if (err instanceof ApiError && err.field && (err.field === 'title' || err.field === 'body')) {
        setFieldErrors({ [err.field]: err.message });
      } else if (err instanceof ApiError) {
        setFormError(`${err.message} (${err.code})`);
      } else {
        setFormError(err instanceof Error ? `Network error: ${err.message}` : String(err));
      }
    } finally {
      setBusy(false);
    }
  }

  return (
    <section className="card">
      <h2>Publish content</h2>
      <form onSubmit={submit} noValidate data-testid="content-form">
        <div className={`field ${fieldErrors.title ? 'has-error' : ''}`}>
          <label htmlFor="title">Title</label>
          <input
            id="title"
            name="title"
            type="text"
            autoComplete="off"
            placeholder="Something worth announcing"
            value={title}
            onChange={(e) => setTitle(e.target.value)}
            aria-invalid={fieldErrors.title ? true : undefined}
            aria-describedby={fieldErrors.title ? 'title-error' : undefined}
            data-testid="title-input"
          />
          {fieldErrors.title && (
            <p className="field-error" id="title-error" data-testid="title-error" role="alert">
              {fieldErrors.title}
            </p>
          )}
        </div>
        <div className={`field ${fieldErrors.body ? 'has-error' : ''}`}>
          <label htmlFor="body">Body</label>
          <textarea
            id="body"
            name="body"
            rows={4}
            placeholder="Optional details"
            value={body}
            onChange={(e) => setBody(e.target.value)}
            aria-invalid={fieldErrors.body ? true : undefined}
            aria-describedby={fieldErrors.body ? 'body-error' : undefined}
            data-testid="body-input"
          />
          {fieldErrors.body && (
            <p className="field-error" id="body-error" data-testid="body-error" role="alert">
              {fieldErrors.body}
            </p>
          )}
        </div>
        <div className="form-actions">
          <button type="submit" className="primary" disabled={busy} data-testid="submit-button">
            {busy ? 'Publishing…' : 'Publish'}
          </button>
          {created && (
            <span className="form-success" data-testid="form-success">
              Published #{created.id}
            </span>
          )}
        </div>
        {formError && (
          <p className="form-error" data-testid="form-error" role="alert">
            {formError}
          </p>
        )}
      </form>
    </section>
  );
}
