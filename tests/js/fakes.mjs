// Fakes for the connection manager: a controllable clock, WebSocket, EventSource and a tiny
// in-memory job server behind `fetch`.  No network, no real time.

export const flush = () => new Promise((resolve) => setImmediate(resolve));

export class FakeClock {
  constructor(start = 1_700_000_000_000) {
    this.t = start;
    this.timers = new Map();
    this.nextId = 1;
  }
  now() {
    return this.t;
  }
  setTimeout(fn, ms) {
    const id = this.nextId++;
    this.timers.set(id, { at: this.t + Math.max(0, ms), fn, id });
    return id;
  }
  clearTimeout(id) {
    this.timers.delete(id);
  }
  /** Run every timer due within `ms`, in order, letting promises settle in between. */
  async advance(ms) {
    const target = this.t + ms;
    for (;;) {
      await flush();
      const due = [...this.timers.values()]
        .filter((x) => x.at <= target)
        .sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!due) break;
      this.timers.delete(due.id);
      this.t = due.at;
      due.fn();
    }
    this.t = target;
    await flush();
  }
}

export class FakeWebSocket {
  constructor(url) {
    this.url = url;
    this.onopen = this.onmessage = this.onerror = this.onclose = null;
    this.closed = false;
    this.closeCode = null;
  }
  close(code = 1000) {
    this.closed = true;
    this.closeCode = code;
  }
  /** server -> client */
  send(obj) {
    if (this.closed) return; // the client hung up: nothing reaches it
    this.onmessage?.({ data: JSON.stringify(obj) });
  }
  serverClose(code = 1006) {
    if (this.closed) return;
    this.closed = true;
    this.onerror?.({});
    this.onclose?.({ code });
  }
  get after() {
    return Number(new URL(this.url).searchParams.get('after'));
  }
}

export class FakeEventSource {
  constructor(url) {
    this.url = url;
    this.listeners = new Map();
    this.closed = false;
  }
  addEventListener(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, []);
    this.listeners.get(type).push(fn);
  }
  close() {
    this.closed = true;
  }
  dispatch(type, obj) {
    if (this.closed) return;
    for (const fn of this.listeners.get(type) ?? []) fn({ data: obj === undefined ? '' : JSON.stringify(obj) });
  }
  welcome(extra = {}) {
    this.dispatch('welcome', { type: 'welcome', transport: 'sse', ...extra });
  }
  event(ev) {
    this.dispatch('message', ev);
  }
  fail() {
    this.dispatch('error');
  }
  get after() {
    return Number(new URL(this.url).searchParams.get('after'));
  }
}

export function makeEvent(seq, type = 'progress', data = {}, attempt = 1) {
  return { job_id: 'job1', seq, type, attempt, ts: new Date(1_700_000_000_000 + seq * 100).toISOString(), data };
}

function response(status, body, headers = {}) {
  return {
    ok: status >= 200 && status < 300,
    status,
    headers: { get: (name) => headers[name] ?? headers[name.toLowerCase()] ?? null },
    json: async () => body,
  };
}

/**
 * A job with an event log, reachable through `fetch`.  Long polls with nothing new are held
 * until an event is pushed or the fake clock passes `wait`.
 */
export class FakeServer {
  constructor(clock, { status = 'running', events = [] } = {}) {
    this.clock = clock;
    this.status = status;
    this.events = [...events];
    this.down = false;
    this.requests = [];
    this.held = [];
    this.pollStatus = null; // force an HTTP status for polls
  }
  get lastSeq() {
    return this.events.length ? this.events[this.events.length - 1].seq : 0;
  }
  push(...events) {
    this.events.push(...events);
    const held = this.held;
    this.held = [];
    for (const h of held) h();
  }
  job() {
    return { id: 'job1', status: this.status, last_seq: this.lastSeq, attempt: 1, max_attempts: 3 };
  }
  pollBody(after) {
    const events = this.events.filter((e) => e.seq > after);
    const terminal = ['completed', 'failed', 'cancelled'].includes(this.status);
    return { events, last_seq: this.lastSeq, status: this.status, terminal, poll_after_ms: 1000 };
  }
  fetch = (url, init) => {
    const u = new URL(url);
    this.requests.push(u.pathname + u.search);
    if (this.down) return Promise.reject(new TypeError('Failed to fetch'));
    if (u.pathname === '/api/jobs/job1') return Promise.resolve(response(200, this.job()));
    if (u.pathname === '/api/jobs/job1/events') {
      if (this.pollStatus) return Promise.resolve(response(this.pollStatus, {}));
      const after = Number(u.searchParams.get('after'));
      const wait = Number(u.searchParams.get('wait') ?? 0);
      if (after > this.lastSeq) return Promise.resolve(response(400, { code: 'cursor_ahead' }));
      const body = this.pollBody(after);
      if (body.events.length || wait <= 0 || body.terminal) return Promise.resolve(response(200, body));
      return new Promise((resolve, reject) => {
        const id = this.clock.setTimeout(() => resolve(response(200, this.pollBody(after))), wait * 1000);
        this.held.push(() => {
          this.clock.clearTimeout(id);
          resolve(response(200, this.pollBody(after)));
        });
        init?.signal?.addEventListener?.('abort', () => reject(new Error('aborted')));
      });
    }
    return Promise.resolve(response(404, { title: 'Not found' }));
  };
  get polls() {
    return this.requests.filter((r) => r.includes('/events'));
  }
}

class FakeAbortSignal {
  constructor() {
    this.aborted = false;
    this.fns = [];
  }
  addEventListener(_type, fn) {
    this.fns.push(fn);
  }
}

export class FakeAbortController {
  constructor() {
    this.signal = new FakeAbortSignal();
  }
  abort() {
    this.signal.aborted = true;
    for (const fn of this.signal.fns) fn();
  }
}

/** Everything a ConnectionManager needs, plus handles to what it created. */
export function makeDeps({ server, clock, random = () => 0.5 } = {}) {
  const sockets = [];
  const sources = [];
  const deps = {
    createWebSocket: (url) => {
      const ws = new FakeWebSocket(url);
      sockets.push(ws);
      return ws;
    },
    createEventSource: (url) => {
      const es = new FakeEventSource(url);
      sources.push(es);
      return es;
    },
    fetch: (url, init) => server.fetch(url, init),
    clock,
    random,
    AbortController: FakeAbortController,
  };
  return { deps, sockets, sources };
}
