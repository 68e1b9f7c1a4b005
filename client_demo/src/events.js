// WS /ws/{session_id}: the session's events, reconnecting with back-off until closed.

const PING_INTERVAL_MS = 20_000;
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 8_000;
// A socket that never opens (an unknown session, a refused key) is given up after this many tries.
const MAX_FAILED_TRIES = 6;

export class EventSocket {
  // onMessage(msg) gets every parsed JSON message; onStatus(status) gets
  // 'connecting' | 'open' | 'closed' as the socket comes and goes.
  constructor(urlFn, { onMessage, onStatus }) {
    this.urlFn = urlFn;
    this.onMessage = onMessage;
    this.onStatus = onStatus;
    this.ws = null;
    this.closed = false;
    this.retryMs = RETRY_MIN_MS;
    this.retryTimer = null;
    this.pingTimer = null;
    this.failedTries = 0;
    this.connect();
  }

  connect() {
    if (this.closed) return;
    this.onStatus('connecting');
    const ws = new WebSocket(this.urlFn());
    this.ws = ws;
    let opened = false;
    ws.addEventListener('open', () => {
      if (this.ws !== ws) return;
      opened = true;
      this.failedTries = 0;
      this.retryMs = RETRY_MIN_MS;
      this.onStatus('open');
      this.pingTimer = setInterval(() => {
        if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'ping' }));
      }, PING_INTERVAL_MS);
    });
    ws.addEventListener('message', (event) => {
      if (this.ws !== ws) return;
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        console.warn('events: not JSON', event.data);
        return;
      }
      if (msg && typeof msg === 'object' && msg.type !== 'pong') this.onMessage(msg);
    });
    ws.addEventListener('close', (event) => {
      if (this.ws !== ws) return;
      clearInterval(this.pingTimer);
      this.ws = null;
      if (this.closed) {
        this.onStatus('closed', event);
        return;
      }
      if (!opened) this.failedTries += 1;
      // 1008 (policy violation) / 44xx closes mean the server refused us: retrying won't help.
      const refused = event.code === 1008 || (event.code >= 4400 && event.code < 4500);
      if (refused || this.failedTries >= MAX_FAILED_TRIES) {
        this.closed = true;
        this.onStatus('unavailable', event);
        return;
      }
      this.onStatus('closed', event);
      this.retryTimer = setTimeout(() => this.connect(), this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
    });
  }

  close() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000, 'leaving');
  }
}
