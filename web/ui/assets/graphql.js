// A GraphQL client for the tasker API, small enough to read in one sitting:
//   - query(document, variables): one POST to the endpoint, resolving to `data` or throwing an
//     ApiError that carries the API's extensions.code (e.g. UNAUTHENTICATED, FORBIDDEN);
//   - subscribe(document, variables, handlers): a subscription over one shared websocket that
//     speaks graphql-transport-ws. When the connection drops it reconnects with backoff and
//     subscribes again, asking `variables()` (a function) for fresh variables, so a caller can
//     resume where it stopped, e.g. with afterTransitionId.
// The bearer token, when there is one, goes in the Authorization header of each POST and in the
// connection_init payload of the websocket.

export class ApiError extends Error {
  constructor(message, code, status) {
    super(message);
    this.code = code || 'ERROR';
    this.status = status || 0;
  }
}

const PROTOCOL = 'graphql-transport-ws';

export class Client {
  // endpoint: a path on this host, e.g. "/query". token(): the bearer token or null.
  constructor(endpoint, token) {
    this.url = location.origin + endpoint;
    this.wsUrl = (location.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + location.host + endpoint;
    this.token = token;
    this.subs = new Map();
    this.nextId = 1;
    this.ws = null;
    this.acked = false;
    this.held = false;
    this.retryDelay = 500;
    this.retryTimer = null;
    this.listeners = new Set();
    this.state = 'idle'; // idle | connecting | live | reconnecting | refused
  }

  async query(document, variables = {}) {
    const headers = { 'Content-Type': 'application/json', Accept: 'application/json' };
    const token = this.token();
    if (token) headers.Authorization = 'Bearer ' + token;
    let res;
    try {
      res = await fetch(this.url, { method: 'POST', headers, body: JSON.stringify({ query: document, variables }) });
    } catch (e) {
      throw new ApiError('the server cannot be reached: ' + e.message, 'NETWORK');
    }
    let body;
    try {
      body = await res.json();
    } catch (e) {
      throw new ApiError('the server answered ' + res.status + ' without a GraphQL response', 'HTTP_' + res.status, res.status);
    }
    if (body.errors && body.errors.length) {
      const e = body.errors[0];
      throw new ApiError(e.message, e.extensions && e.extensions.code, res.status);
    }
    return body.data;
  }

  // onState(fn) calls fn with the connection state whenever it changes.
  onState(fn) {
    this.listeners.add(fn);
    fn(this.state);
    return () => this.listeners.delete(fn);
  }

  setState(s) {
    if (s === this.state) return;
    this.state = s;
    for (const fn of this.listeners) fn(s);
  }

  // subscribe starts a subscription; handlers: {next(data), error(ApiError)}. It returns a
  // function that stops it. variables is a function, called at every (re)subscription.
  subscribe(document, variables, handlers) {
    const id = String(this.nextId++);
    this.subs.set(id, { document, variables, handlers });
    if (this.ws && this.acked) this.sendSubscribe(id);
    else this.connect();
    return () => {
      if (!this.subs.delete(id)) return;
      if (this.ws && this.acked) this.send({ id, type: 'complete' });
      if (this.subs.size === 0) this.close();
    };
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  sendSubscribe(id) {
    const s = this.subs.get(id);
    this.send({ id, type: 'subscribe', payload: { query: s.document, variables: s.variables() } });
  }

  connect() {
    if (this.ws || this.retryTimer || this.held) return;
    this.setState(this.state === 'idle' ? 'connecting' : 'reconnecting');
    const ws = new WebSocket(this.wsUrl, PROTOCOL);
    this.ws = ws;
    this.acked = false;
    ws.onopen = () => {
      const token = this.token();
      ws.send(JSON.stringify({ type: 'connection_init', payload: token ? { Authorization: 'Bearer ' + token } : {} }));
    };
    ws.onmessage = (ev) => this.receive(JSON.parse(ev.data));
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.acked = false;
      if (ev.code === 4401 || ev.code === 4403) {
        this.setState('refused');
        for (const s of this.subs.values()) s.handlers.error(new ApiError(ev.reason || 'the server refused the token', 'UNAUTHENTICATED'));
        return;
      }
      if (this.subs.size === 0) { this.setState('idle'); return; }
      this.setState('reconnecting');
      this.retryTimer = setTimeout(() => { this.retryTimer = null; this.connect(); }, this.retryDelay);
      this.retryDelay = Math.min(this.retryDelay * 2, 10000);
    };
  }

  receive(msg) {
    switch (msg.type) {
      case 'connection_ack':
        this.acked = true;
        this.retryDelay = 500;
        this.setState('live');
        for (const id of this.subs.keys()) this.sendSubscribe(id);
        break;
      case 'ping':
        this.send({ type: 'pong' });
        break;
      case 'next': {
        const s = this.subs.get(msg.id);
        if (!s) break;
        if (msg.payload.errors && msg.payload.errors.length) {
          const e = msg.payload.errors[0];
          s.handlers.error(new ApiError(e.message, e.extensions && e.extensions.code));
        } else {
          s.handlers.next(msg.payload.data);
        }
        break;
      }
      case 'error': {
        const s = this.subs.get(msg.id);
        this.subs.delete(msg.id);
        const e = (msg.payload && msg.payload[0]) || { message: 'subscription refused' };
        if (s) s.handlers.error(new ApiError(e.message, e.extensions && e.extensions.code));
        break;
      }
      case 'complete':
        this.subs.delete(msg.id);
        break;
    }
  }

  // drop closes the websocket as a network failure would: the client reconnects and resumes
  // its subscriptions. With hold, it stays disconnected until resume() (tests use this to write
  // while the console is offline).
  drop(hold) {
    this.held = Boolean(hold);
    if (this.ws) this.ws.close(4000, 'dropped by the client');
  }

  resume() {
    this.held = false;
    if (this.subs.size > 0) this.connect();
  }

  close() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const ws = this.ws;
    this.ws = null;
    this.acked = false;
    if (ws) ws.close(1000, 'done');
    this.setState('idle');
  }
}
