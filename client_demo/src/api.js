// The control API over HTTP (docs/control-api.md): the API key and a fetch wrapper that
// turns `{"error": {"code", "message"}}` answers into ApiError.

const KEY_STORAGE = 'avatar-agents.api-key';

export class ApiError extends Error {
  constructor(status, code, message, extra = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.extra = extra;
  }
}

let apiKey = null;

// The sign-in link is `/#api_key=<key>`: the fragment never reaches a server log. Keep the key
// in this tab's sessionStorage and take it out of the address bar (and the history).
export function loadApiKey() {
  const fragment = new URLSearchParams(window.location.hash.slice(1));
  const fromUrl = fragment.get('api_key');
  if (fromUrl !== null) {
    fragment.delete('api_key');
    const rest = fragment.toString();
    const url = window.location.pathname + window.location.search + (rest ? `#${rest}` : '');
    window.history.replaceState(window.history.state, '', url);
    setApiKey(fromUrl);
  } else {
    try {
      apiKey = window.sessionStorage.getItem(KEY_STORAGE) || null;
    } catch {
      apiKey = null; // storage disabled: the key lives only as long as the page
    }
  }
  return apiKey;
}

export function setApiKey(key) {
  apiKey = key ? key.trim() || null : null;
  try {
    if (apiKey) window.sessionStorage.setItem(KEY_STORAGE, apiKey);
    else window.sessionStorage.removeItem(KEY_STORAGE);
  } catch {
    // storage disabled: keep it in memory only
  }
}

export function getApiKey() {
  return apiKey;
}

function headers(extra) {
  const h = { ...extra };
  if (apiKey) h['X-API-Key'] = apiKey;
  return h;
}

// `api('/avatars', {method: 'POST', body: {...}})` → the parsed JSON body, or throws ApiError.
export async function api(path, { method = 'GET', body, keepalive = false } = {}) {
  const init = { method, headers: headers(), keepalive };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, 'network_error', `cannot reach the control API (${err?.message ?? err})`);
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    const error = data?.error;
    if (error && typeof error === 'object') {
      const { code, message, ...extra } = error;
      throw new ApiError(res.status, code ?? 'http_error', message ?? res.statusText, extra);
    }
    throw new ApiError(res.status, 'http_error', `${method} ${path}: HTTP ${res.status}`);
  }
  return data;
}

// An authenticated image (background thumbnails) as an object URL for <img src>.
export async function fetchImageUrl(path) {
  const res = await fetch(path, { headers: headers() });
  if (!res.ok) throw new ApiError(res.status, 'http_error', `GET ${path}: HTTP ${res.status}`);
  return URL.createObjectURL(await res.blob());
}

// WS /ws/{session_id}: browsers cannot set headers on a WebSocket, so the key is a query param.
export function eventsUrl(sessionId) {
  const proto = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
  const url = new URL(`${proto}//${window.location.host}/ws/${encodeURIComponent(sessionId)}`);
  if (apiKey) url.searchParams.set('access_token', apiKey);
  return url.toString();
}
