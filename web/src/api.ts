// Thin wrappers around the gateway's HTTP API (same origin as the page).

export interface Content {
  id: number;
  title: string;
  body: string;
  created_at: string;
}

export interface ContentPage {
  items: Content[];
  next_cursor: string | null;
}

/** An error response from the API, `{"error": ..., "field"?: ..., "message": ...}`. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly field?: string;

  constructor(status: number, code: string, message: string, field?: string) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

async function request<T>(path: string, init?: RequestInit): Promise<T> {
  const res = await fetch(path, {
    ...init,
    headers: { Accept: 'application/json', ...(init?.body ? { 'Content-Type': 'application/json' } : {}), ...init?.headers },
  });
  const text = await res.text();
  let data: unknown = undefined;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = undefined;
    }
  }
  if (!res.ok) {
    const obj = (data && typeof data === 'object' ? data : {}) as Record<string, unknown>;
    const code = typeof obj.error === 'string' ? obj.error : `http_${res.status}`;
    const message =
      typeof obj.message === 'string' ? obj.message : text.trim() || `${res.status} ${res.statusText}`.trim();
    const field = typeof obj.field === 'string' ? obj.field : undefined;
    throw new ApiError(res.status, code, message, field);
  }
  if (data === undefined) throw new ApiError(res.status, 'bad_response', `Expected JSON from ${path}`);
  return data as T;
}

export function listContent(limit = 20): Promise<ContentPage> {
  return request<ContentPage>(`/api/content?limit=${limit}`, { cache: 'no-store' });
}

export function createContent(title: string, body: string): Promise<Content> {
  return request<Content>('/api/content', { method: 'POST', body: JSON.stringify({ title, body }) });
}
