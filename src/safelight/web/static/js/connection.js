// @ts-check
/**
 * The browser's connection ladder (DESIGN.md "The browser's connection ladder", API.md
 * "Three transports, one cursor").  Pure logic: no DOM.  Every transport, the clock and the
 * random source are injected, so tests drive it with fakes and a fake clock.
 *
 *   snapshot (GET /api/jobs/{id})
 *     -> WebSocket  (proven by `welcome` within wsProofMs)
 *     -> SSE        (proven by `welcome` within sseProofMs)
 *     -> polling    (long poll `events?after=&wait=`)
 *
 * - A transport that never worked in this page session steps down at once.
 * - One that worked is reconnected with full-jitter backoff; `stepDownAfter` consecutive
 *   failures step down, unless the server itself is unreachable (then: "offline", keep
 *   checking, and reconnect the same transport when it is back).
 * - Silence (no frame, pings included) for watchdogMs: the connection is dead.
 * - On SSE or polling, WebSocket (then SSE) is probed every probeIntervalMs and adopted on
 *   `welcome`.
 * - Events are applied only when seq == cursor + 1; duplicates are dropped; a gap is
 *   backfilled with a poll.  After the terminal event everything stops.
 *
 * This module holds those decisions only.  How to open, read and close each transport is in
 * transports/ (ws.js, sse.js, poll.js): they report welcome / frame / failure / close
 * through a listener and decide nothing.
 */
import { PollTransport, eventsUrl } from './transports/poll.js';
import { SseTransport } from './transports/sse.js';
import { fmtS } from './transports/transport.js';
import { WsTransport } from './transports/ws.js';

/** @typedef {import('./transports/transport.js').TransportName} TransportName */
/** @typedef {import('./transports/transport.js').JobEvent} JobEvent */
/** @typedef {import('./transports/transport.js').Transport} Transport */
/** @typedef {import('./transports/transport.js').TransportListener} TransportListener */
/** @typedef {import('./transports/transport.js').Welcome} Welcome */
/** @typedef {import('./transports/transport.js').Page} Page */

/**
 * The transports' dependencies plus the random source of the backoff.
 * @typedef {import('./transports/transport.js').TransportDeps & {random: () => number}} Deps
 */

/**
 * @typedef {object} ConnectionSettings
 * @property {number} wsProofMs        WebSocket must deliver `welcome` within this
 * @property {number} sseProofMs       SSE must deliver `welcome` within this
 * @property {number} backoffBaseMs    full-jitter backoff base
 * @property {number} backoffCapMs     full-jitter backoff cap
 * @property {number} watchdogMs       no frame for this long: the connection is dead
 * @property {number} probeIntervalMs  while on SSE/polling, probe up this often
 * @property {number} stepDownAfter    consecutive failures of a worked transport before stepping down
 * @property {number} healthyAfterMs   a connection alive this long resets the failure count
 * @property {number} pollWaitS        long-poll `wait` (0 = short polling at poll_after_ms)
 * @property {number} pollGraceMs      client timeout of a poll = wait + this
 * @property {number} pollAfterMs      short-poll delay when the server gives no advice
 */

/** @type {Readonly<ConnectionSettings>} */
export const DEFAULT_SETTINGS = Object.freeze({
  wsProofMs: 3000,
  sseProofMs: 4000,
  backoffBaseMs: 500,
  backoffCapMs: 10000,
  watchdogMs: 35000,
  probeIntervalMs: 120000,
  stepDownAfter: 3,
  healthyAfterMs: 5000,
  pollWaitS: 25,
  pollGraceMs: 10000,
  pollAfterMs: 1000,
});

/** @type {ReadonlyArray<TransportName>} */
export const LADDER = Object.freeze(['ws', 'sse', 'poll']);

/** Human names, used in reasons and by the views. */
export const TRANSPORT_LABEL = Object.freeze({ ws: 'WebSocket', sse: 'SSE', poll: 'Polling' });

const TERMINAL_TYPES = new Set(['completed', 'failed', 'cancelled']);
const TERMINAL_STATUSES = new Set(['completed', 'failed', 'cancelled']);

/**
 * @typedef {'idle' | 'connecting' | 'live' | 'reconnecting' | 'offline' | 'done' | 'stopped' | 'error'} Mode
 *
 * @typedef {object} StepDown
 * @property {TransportName | null} from
 * @property {TransportName} to
 * @property {string} reason
 * @property {number} at
 *
 * @typedef {object} ConnectionState
 * @property {Mode} mode
 * @property {TransportName} transport       the ladder level in use or being tried
 * @property {boolean} confirmed             true when `transport` is proven right now
 * @property {TransportName | null} forced
 * @property {number | null} retryAt         when the next attempt happens (reconnecting/offline)
 * @property {number} failures               consecutive failures of `transport`
 * @property {string | null} lastReason      why the last connection failed
 * @property {StepDown | null} lastStepDown
 * @property {number} cursor                 seq of the last applied event
 * @property {number} knownLastSeq           the highest last_seq the server reported
 * @property {number | null} lastContactAt   any frame or response from the server
 * @property {{duplicates: number, gaps: number, backfilled: number, probes: number}} stats
 *
 * @typedef {{type: 'state', state: ConnectionState}
 *   | {type: 'snapshot', job: any, reset: boolean}
 *   | {type: 'event', event: JobEvent, receivedAt: number, transport: string}
 *   | {type: 'fatal', status: number, problem: any}} Message
 */

/**
 * Full-jitter backoff: uniform in [0, min(cap, base * 2^attempt)).
 * @param {number} attempt 0 for the first retry
 * @param {number} baseMs
 * @param {number} capMs
 * @param {() => number} random
 */
export function backoffDelay(attempt, baseMs, capMs, random) {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.max(0, attempt));
  return Math.floor(random() * ceiling);
}

/**
 * Read timing overrides from a query string (`?ws_timeout_ms=500&backoff_cap_ms=1000`),
 * for tests and demos.  Unknown or invalid values are ignored.
 * @param {URLSearchParams} params
 * @returns {Partial<ConnectionSettings>}
 */
export function settingsFromQuery(params) {
  /** @type {Record<string, keyof ConnectionSettings>} */
  const names = {
    ws_timeout_ms: 'wsProofMs',
    sse_timeout_ms: 'sseProofMs',
    backoff_base_ms: 'backoffBaseMs',
    backoff_cap_ms: 'backoffCapMs',
    watchdog_ms: 'watchdogMs',
    probe_ms: 'probeIntervalMs',
    step_down_after: 'stepDownAfter',
    healthy_ms: 'healthyAfterMs',
    poll_wait_s: 'pollWaitS',
  };
  /** @type {Partial<ConnectionSettings>} */
  const out = {};
  for (const [param, key] of Object.entries(names)) {
    const raw = params.get(param);
    if (raw === null || raw.trim() === '') continue;
    const value = Number(raw);
    if (Number.isFinite(value) && value >= 0) out[key] = value;
  }
  return out;
}

/**
 * @param {string | null | undefined} raw
 * @returns {TransportName | null}
 */
export function parseTransport(raw) {
  return raw === 'ws' || raw === 'sse' || raw === 'poll' ? raw : null;
}

/**
 * One live attempt on one transport.
 * @typedef {object} Conn
 * @property {number} id
 * @property {TransportName} transport
 * @property {boolean} probe
 * @property {boolean} proven
 * @property {boolean} closed
 * @property {Transport | null} link  the open transport
 * @property {any} proofTimer
 * @property {any} watchdogTimer
 * @property {any} healthyTimer
 * @property {boolean} catchUp   reads the log of a finished job; never changes the mode
 */

export class ConnectionManager {
  /**
   * @param {object} options
   * @param {string} options.jobId
   * @param {string} options.baseUrl           e.g. "http://127.0.0.1:8000" (no trailing slash)
   * @param {Deps} options.deps
   * @param {Partial<ConnectionSettings>} [options.settings]
   * @param {TransportName | null} [options.forced]
   * @param {number} [options.after]           start cursor (0: replay the whole log)
   */
  constructor({ jobId, baseUrl, deps, settings = {}, forced = null, after = 0 }) {
    this.jobId = jobId;
    this.baseUrl = baseUrl.replace(/\/$/, '');
    this.deps = deps;
    /** @type {ConnectionSettings} */
    this.settings = { ...DEFAULT_SETTINGS, ...settings };
    /** @type {Set<(m: Message) => void>} */
    this.listeners = new Set();
    /** @type {Record<TransportName, boolean>} worked at least once in this page session */
    this.worked = { ws: false, sse: false, poll: false };
    /** @type {Map<number, {event: JobEvent, receivedAt: number, transport: string}>} */
    this.pending = new Map();
    this.backfilling = false;
    /** @type {any} */
    this.backfillTimer = null;
    /** @type {any} */
    this.retryTimer = null;
    /** @type {any} */
    this.probeTimer = null;
    /** @type {Conn | null} */
    this.main = null;
    /** @type {Conn | null} */
    this.prober = null;
    this.connSeq = 0;
    this.offlineAttempts = 0;
    this.snapshotFailures = 0;
    /** @type {(() => void) | null} what to run when the user says "reconnect now" while offline */
    this.offlineCheck = null;
    /** @type {ConnectionState} */
    this.state = {
      mode: 'idle',
      transport: forced ?? 'ws',
      confirmed: false,
      forced,
      retryAt: null,
      failures: 0,
      lastReason: null,
      lastStepDown: null,
      cursor: after,
      knownLastSeq: after,
      lastContactAt: null,
      stats: { duplicates: 0, gaps: 0, backfilled: 0, probes: 0 },
    };
  }

  // ---------------------------------------------------------------- public API

  /**
   * @param {(m: Message) => void} fn
   * @returns {() => void} unsubscribe
   */
  subscribe(fn) {
    this.listeners.add(fn);
    fn({ type: 'state', state: this.getState() });
    return () => this.listeners.delete(fn);
  }

  /** @returns {ConnectionState} a copy */
  getState() {
    return { ...this.state, stats: { ...this.state.stats } };
  }

  /** Snapshot first, then the ladder. */
  start() {
    if (this.state.mode !== 'idle' && this.state.mode !== 'stopped') return;
    this.setState({ mode: 'connecting', confirmed: false, retryAt: null });
    this.loadSnapshot(false);
  }

  /** Stop everything (page unload).  `start()` or `resume()` may follow. */
  stop() {
    this.teardown();
    this.setState({ mode: 'stopped', confirmed: false, retryAt: null });
  }

  /**
   * The job left its terminal state (a retry was granted): carry on from the cursor.
   */
  resume() {
    this.teardown();
    this.setState({ mode: 'connecting', confirmed: false, retryAt: null, failures: 0 });
    this.loadSnapshot(false);
  }

  /**
   * Force a transport (the user's "Switch to polling"), or null to go back to automatic.
   * @param {TransportName | null} transport
   */
  switchTo(transport) {
    if (this.state.mode === 'done' || this.state.mode === 'error') {
      this.setState({ forced: transport });
      return;
    }
    const from = this.state.transport;
    this.teardown();
    const to = transport ?? 'ws';
    /** @type {Partial<ConnectionState>} */
    const patch = { forced: transport, transport: to, failures: 0, confirmed: false };
    if (transport && transport !== from) {
      patch.lastStepDown = {
        from,
        to,
        reason: `Switched to ${TRANSPORT_LABEL[to]} by you`,
        at: this.now(),
      };
    }
    this.setState({ ...patch, mode: 'connecting', retryAt: null });
    this.connect();
  }

  /** Skip the current backoff wait (the user pressed "Reconnect now", or the network came back). */
  retryNow() {
    if (this.state.mode !== 'reconnecting' && this.state.mode !== 'offline') return;
    if (this.retryTimer !== null) {
      this.clock.clearTimeout(this.retryTimer);
      this.retryTimer = null;
    }
    if (this.state.mode === 'offline') {
      this.setState({ retryAt: null });
      this.checkServer();
    } else {
      this.setState({ mode: 'connecting', retryAt: null });
      this.connect();
    }
  }

  // ---------------------------------------------------------------- plumbing

  get clock() {
    return this.deps.clock;
  }

  now() {
    return this.clock.now();
  }

  /** @param {Message} message */
  emit(message) {
    for (const fn of [...this.listeners]) {
      try {
        fn(message);
      } catch (err) {
        // A broken view must not break the connection logic.
        console.error('safelight: subscriber failed', err);
      }
    }
  }

  /** @param {Partial<ConnectionState>} patch */
  setState(patch) {
    Object.assign(this.state, patch);
    this.emit({ type: 'state', state: this.getState() });
  }

  /** @param {string} path */
  http(path) {
    return `${this.baseUrl}${path}`;
  }

  jobPath() {
    return `/api/jobs/${encodeURIComponent(this.jobId)}`;
  }

  jobUrl() {
    return this.http(this.jobPath());
  }

  /** @param {any} t */
  clear(t) {
    if (t !== null && t !== undefined) this.clock.clearTimeout(t);
  }

  /** Close every connection and timer. */
  teardown() {
    this.closeConn(this.main);
    this.closeConn(this.prober);
    this.main = null;
    this.prober = null;
    for (const key of /** @type {const} */ (['retryTimer', 'probeTimer', 'backfillTimer'])) {
      this.clear(this[key]);
      this[key] = null;
    }
  }

  /** @param {Conn | null} conn */
  closeConn(conn) {
    if (!conn || conn.closed) return;
    conn.closed = true;
    this.clear(conn.proofTimer);
    this.clear(conn.watchdogTimer);
    this.clear(conn.healthyTimer);
    if (conn.link) conn.link.close();
  }

  /** @param {Conn} conn */
  isCurrent(conn) {
    return !conn.closed && (conn === this.main || conn === this.prober);
  }

  isFinished() {
    return this.state.mode === 'done' || this.state.mode === 'stopped' || this.state.mode === 'error';
  }

  contact() {
    this.state.lastContactAt = this.now();
  }

  // ---------------------------------------------------------------- snapshot

  /**
   * @param {boolean} reset
   */
  loadSnapshot(reset) {
    this.fetchJob().then(
      (result) => {
        if (this.state.mode === 'stopped' || this.state.mode === 'error') return;
        if (result.kind === 'fatal') {
          this.teardown();
          this.setState({ mode: 'error', confirmed: false, retryAt: null });
          this.emit({ type: 'fatal', status: result.status, problem: result.problem });
          return;
        }
        if (result.kind === 'unreachable') {
          this.snapshotFailures += 1;
          this.goOffline(() => this.loadSnapshot(reset), result.reason);
          return;
        }
        this.snapshotFailures = 0;
        this.offlineAttempts = 0;
        const job = result.job;
        this.bumpKnown(job.last_seq);
        this.emit({ type: 'snapshot', job, reset });
        this.afterSnapshot(job);
      },
    );
  }

  /**
   * @returns {Promise<{kind: 'ok', job: any} | {kind: 'fatal', status: number, problem: any} | {kind: 'unreachable', reason: string}>}
   */
  async fetchJob() {
    try {
      const res = await this.deps.fetch(this.http(this.jobPath()), {
        headers: { Accept: 'application/json' },
      });
      this.contact();
      if (res.ok) return { kind: 'ok', job: await res.json() };
      if (res.status === 404 || res.status === 410 || res.status === 400) {
        let problem = null;
        try {
          problem = await res.json();
        } catch {
          // not JSON
        }
        return { kind: 'fatal', status: res.status, problem };
      }
      return { kind: 'unreachable', reason: `The server answered ${res.status}` };
    } catch {
      return { kind: 'unreachable', reason: 'The server cannot be reached' };
    }
  }

  /** @param {any} job */
  afterSnapshot(job) {
    if (TERMINAL_STATUSES.has(job.status) && job.last_seq <= this.state.cursor) {
      this.finish();
      return;
    }
    if (TERMINAL_STATUSES.has(job.status)) {
      // Finished already: read the rest of the log with plain polls, no live transport.
      this.catchUp();
      return;
    }
    this.setState({ mode: 'connecting', retryAt: null });
    this.connect();
  }

  /** Read the remaining log of a finished job. */
  catchUp() {
    const conn = this.newConn('poll', false);
    conn.catchUp = true;
    this.main = conn;
    this.setState({ mode: 'connecting', confirmed: false, retryAt: null });
    this.open(conn);
  }

  // ---------------------------------------------------------------- the ladder

  /** Open the current ladder level. */
  connect() {
    if (this.isFinished()) return;
    this.closeConn(this.main);
    this.main = null;
    const transport = this.state.forced ?? this.state.transport;
    if (transport !== this.state.transport) this.state.transport = transport;
    const conn = this.newConn(transport, false);
    this.main = conn;
    this.open(conn);
  }

  /**
   * @param {TransportName} transport
   * @param {boolean} probe
   * @returns {Conn}
   */
  newConn(transport, probe) {
    return {
      id: ++this.connSeq,
      transport,
      probe,
      proven: false,
      closed: false,
      link: null,
      proofTimer: null,
      watchdogTimer: null,
      healthyTimer: null,
      catchUp: false,
    };
  }

  /** @param {Conn} conn */
  open(conn) {
    const s = this.settings;
    const t = conn.transport;
    // A stream must say `welcome` in time; polling proves itself with its first answer.
    const proofMs = t === 'ws' ? s.wsProofMs : t === 'sse' ? s.sseProofMs : null;
    if (proofMs !== null) {
      conn.proofTimer = this.clock.setTimeout(() => {
        this.fail(conn, `${TRANSPORT_LABEL[t]} was not confirmed within ${fmtS(proofMs)}`);
      }, proofMs);
    }
    const options = {
      jobUrl: this.jobUrl(),
      cursor: () => this.state.cursor,
      deps: this.deps,
      listener: this.listenerFor(conn),
    };
    if (t === 'ws') conn.link = new WsTransport(options);
    else if (t === 'sse') conn.link = new SseTransport(options);
    else {
      conn.link = new PollTransport({
        ...options,
        waitS: conn.catchUp ? 0 : s.pollWaitS,
        graceMs: s.pollGraceMs,
        afterMs: s.pollAfterMs,
        catchUp: conn.catchUp,
      });
    }
    conn.link.open();
  }

  /**
   * What `conn`'s transport reports, dropped once `conn` is no longer in use.
   * @param {Conn} conn
   * @returns {TransportListener}
   */
  listenerFor(conn) {
    return {
      welcome: (welcome) => {
        if (this.isCurrent(conn)) this.onWelcome(conn, welcome);
      },
      frame: (frame) => {
        if (this.isCurrent(conn)) this.onFrame(conn, frame);
      },
      failure: ({ reason, retryAfterMs = null, answered = false }) => {
        if (!this.isCurrent(conn)) return;
        if (answered) this.contact();
        this.fail(conn, reason, retryAfterMs);
      },
      close: (close) => {
        if (!this.isCurrent(conn)) return;
        this.contact();
        if (close.kind === 'reset') {
          this.onReset(close.reason);
          return;
        }
        this.teardown();
        this.setState({ mode: 'error', confirmed: false });
        this.emit({ type: 'fatal', status: close.status, problem: close.problem });
      },
    };
  }

  /**
   * A stream's `welcome`, or polling's first answer.
   * @param {Conn} conn
   * @param {Welcome} msg
   */
  onWelcome(conn, msg) {
    this.contact();
    this.armWatchdog(conn);
    if (typeof msg.last_seq === 'number' && !msg.reset) this.bumpKnown(msg.last_seq);
    if (msg.reset) {
      this.onReset(`The server's log is behind this page (${conn.transport} welcome reset)`);
      return;
    }
    this.proven(conn);
    const last = msg.last_seq;
    if (TERMINAL_STATUSES.has(msg.status ?? '') && typeof last === 'number' && last <= this.state.cursor) {
      this.finish();
    }
  }

  /**
   * An event, a ping, or a poll's page.
   * @param {Conn} conn
   * @param {any} msg
   */
  onFrame(conn, msg) {
    this.contact();
    this.armWatchdog(conn);
    if (typeof msg.seq === 'number') {
      if (!conn.proven) return; // events never precede `welcome`; ignore a confused server
      this.receive(/** @type {JobEvent} */ (msg), conn.transport);
      return;
    }
    if (msg.type === 'page' && conn.transport === 'poll') {
      this.onPage(/** @type {Page} */ (msg));
      return;
    }
    if (msg.type === 'ping') {
      if (typeof msg.last_seq === 'number') {
        this.bumpKnown(msg.last_seq);
        if (msg.last_seq > this.state.cursor && conn.proven && !this.isFinished()) {
          this.requestBackfill();
        }
      }
      this.setState({});
    }
  }

  /**
   * One answer of a poll: apply its events; stop when the log of a finished job is read.
   * @param {Page} page
   */
  onPage(page) {
    if (typeof page.last_seq === 'number') this.bumpKnown(page.last_seq);
    for (const ev of page.events) {
      this.receive(ev, 'poll');
      if (this.isFinished()) return;
    }
    if (page.terminal && typeof page.last_seq === 'number' && page.last_seq <= this.state.cursor) {
      this.finish();
    }
  }

  /** @param {Conn} conn */
  armWatchdog(conn) {
    if (conn.transport === 'poll' || conn.closed) return;
    this.clear(conn.watchdogTimer);
    conn.watchdogTimer = this.clock.setTimeout(() => {
      if (!this.isCurrent(conn)) return;
      this.fail(conn, `No data from the server for ${fmtS(this.settings.watchdogMs)}`);
    }, this.settings.watchdogMs);
  }

  /** @param {Conn} conn */
  proven(conn) {
    if (conn.proven) return;
    conn.proven = true;
    this.clear(conn.proofTimer);
    conn.proofTimer = null;
    if (conn.catchUp) return;
    this.worked[conn.transport] = true;
    if (conn.probe) {
      this.adoptProbe(conn);
      return;
    }
    // Failures reset only after a healthy stretch, so a flapping link still steps down.
    conn.healthyTimer = this.clock.setTimeout(() => {
      if (this.isCurrent(conn)) this.state.failures = 0;
    }, this.settings.healthyAfterMs);
    this.offlineAttempts = 0;
    this.setState({ mode: 'live', confirmed: true, retryAt: null, transport: conn.transport });
    this.scheduleProbe();
  }

  /**
   * A connection failed (proof timeout, refusal, drop, watchdog, poll error).
   * @param {Conn} conn
   * @param {string} reason
   * @param {number | null} [retryAfterMs] the server's Retry-After
   */
  fail(conn, reason, retryAfterMs = null) {
    if (!this.isCurrent(conn)) return;
    if (conn.probe) {
      this.closeConn(conn);
      this.prober = null;
      this.probeFailed(conn.transport);
      return;
    }
    this.closeConn(conn);
    this.main = null;
    this.clear(this.probeTimer);
    this.probeTimer = null;
    this.closeConn(this.prober);
    this.prober = null;
    if (this.isFinished()) return;

    const t = conn.transport;
    const forced = this.state.forced;
    const next = nextLevel(t);
    if (!forced && !this.worked[t] && next) {
      // Never worked here: do not wait, step down at once.
      this.stepDown(t, next, reason);
      return;
    }
    const failures = this.state.failures + 1;
    this.setState({ failures, lastReason: reason, confirmed: false });
    if (failures >= this.settings.stepDownAfter) {
      // Repeated failures: is it the transport, or is the whole server gone?
      this.setState({ mode: 'reconnecting', retryAt: null });
      this.fetchJob().then((result) => {
        if (this.isFinished() || this.main || this.retryTimer !== null) return;
        if (result.kind === 'fatal') {
          this.teardown();
          this.setState({ mode: 'error' });
          this.emit({ type: 'fatal', status: result.status, problem: result.problem });
          return;
        }
        if (result.kind === 'unreachable') {
          this.goOffline(() => this.serverBack(), result.reason);
          return;
        }
        this.bumpKnown(result.job.last_seq);
        this.emit({ type: 'snapshot', job: result.job, reset: false });
        if (TERMINAL_STATUSES.has(result.job.status) && result.job.last_seq <= this.state.cursor) {
          this.finish();
          return;
        }
        if (!forced && next) {
          this.stepDown(t, next, `${TRANSPORT_LABEL[t]} failed ${failures} times in a row (${reason})`);
        } else {
          this.scheduleReconnect(failures - 1, retryAfterMs);
        }
      });
      return;
    }
    this.scheduleReconnect(failures - 1, retryAfterMs);
  }

  /**
   * @param {TransportName} from
   * @param {TransportName} to
   * @param {string} reason
   */
  stepDown(from, to, reason) {
    this.setState({
      transport: to,
      failures: 0,
      confirmed: false,
      mode: 'connecting',
      retryAt: null,
      lastReason: reason,
      lastStepDown: { from, to, reason, at: this.now() },
    });
    this.connect();
  }

  /**
   * @param {number} attempt
   * @param {number | null} retryAfterMs
   */
  scheduleReconnect(attempt, retryAfterMs) {
    const s = this.settings;
    const delay = retryAfterMs ?? backoffDelay(attempt, s.backoffBaseMs, s.backoffCapMs, this.deps.random);
    this.clear(this.retryTimer);
    this.retryTimer = this.clock.setTimeout(() => {
      this.retryTimer = null;
      this.setState({ mode: 'connecting', retryAt: null });
      this.connect();
    }, delay);
    this.setState({ mode: 'reconnecting', retryAt: this.now() + delay });
  }

  /**
   * The server cannot be reached: say so, and keep checking with backoff.
   * @param {() => void} check
   * @param {string} reason
   */
  goOffline(check, reason) {
    const s = this.settings;
    const delay = backoffDelay(this.offlineAttempts, s.backoffBaseMs, s.backoffCapMs, this.deps.random);
    this.offlineAttempts += 1;
    this.clear(this.retryTimer);
    this.offlineCheck = check;
    this.retryTimer = this.clock.setTimeout(() => {
      this.retryTimer = null;
      check();
    }, delay);
    this.setState({ mode: 'offline', confirmed: false, retryAt: this.now() + delay, lastReason: reason });
  }

  /** Offline: check the server now (retryNow). */
  checkServer() {
    const check = this.offlineCheck ?? (() => this.serverBack());
    check();
  }

  /** Health check while offline; reconnect the same transport when the server answers. */
  serverBack() {
    this.fetchJob().then((result) => {
      if (this.isFinished()) return;
      if (result.kind === 'unreachable') {
        this.goOffline(() => this.serverBack(), result.reason);
        return;
      }
      if (result.kind === 'fatal') {
        this.teardown();
        this.setState({ mode: 'error' });
        this.emit({ type: 'fatal', status: result.status, problem: result.problem });
        return;
      }
      this.offlineAttempts = 0;
      this.bumpKnown(result.job.last_seq);
      this.emit({ type: 'snapshot', job: result.job, reset: false });
      // The outage explains the failures: keep the transport that worked.
      this.setState({ failures: 0, mode: 'connecting', retryAt: null });
      this.afterSnapshot(result.job);
    });
  }

  // ---------------------------------------------------------------- probing up

  scheduleProbe() {
    this.clear(this.probeTimer);
    this.probeTimer = null;
    if (this.state.forced || this.state.transport === 'ws' || this.isFinished()) return;
    this.probeTimer = this.clock.setTimeout(() => {
      this.probeTimer = null;
      this.probeUp('ws');
    }, this.settings.probeIntervalMs);
  }

  /** @param {TransportName} target */
  probeUp(target) {
    if (this.isFinished() || this.state.mode !== 'live' || this.prober) return;
    if (LADDER.indexOf(target) >= LADDER.indexOf(this.state.transport)) {
      this.scheduleProbe();
      return;
    }
    this.state.stats.probes += 1;
    const conn = this.newConn(target, true);
    this.prober = conn;
    this.open(conn);
  }

  /** @param {TransportName} transport */
  probeFailed(transport) {
    if (this.isFinished()) return;
    // From polling, try SSE straight after a failed WebSocket probe.
    if (transport === 'ws' && this.state.transport === 'poll') {
      this.probeUp('sse');
      return;
    }
    this.scheduleProbe();
  }

  /** @param {Conn} conn */
  adoptProbe(conn) {
    const from = this.state.transport;
    this.closeConn(this.main);
    this.prober = null;
    conn.probe = false;
    this.main = conn;
    conn.healthyTimer = this.clock.setTimeout(() => {
      if (this.isCurrent(conn)) this.state.failures = 0;
    }, this.settings.healthyAfterMs);
    this.setState({
      transport: conn.transport,
      mode: 'live',
      confirmed: true,
      failures: 0,
      retryAt: null,
      lastReason: `Moved up from ${TRANSPORT_LABEL[from]} to ${TRANSPORT_LABEL[conn.transport]}`,
    });
    this.scheduleProbe();
  }

  // ---------------------------------------------------------------- events by seq

  /**
   * @param {JobEvent} event
   * @param {string} transport
   */
  receive(event, transport) {
    if (this.isFinished()) return;
    const receivedAt = this.now();
    const cursor = this.state.cursor;
    if (event.seq <= cursor || this.pending.has(event.seq)) {
      this.state.stats.duplicates += 1;
      return;
    }
    if (event.seq === cursor + 1) {
      this.apply(event, receivedAt, transport);
      this.drain();
      return;
    }
    // A gap: hold this event and backfill the missing ones with a poll.
    this.pending.set(event.seq, { event, receivedAt, transport });
    this.state.stats.gaps += 1;
    this.bumpKnown(event.seq);
    this.requestBackfill();
  }

  drain() {
    for (;;) {
      if (this.isFinished()) {
        this.pending.clear();
        return;
      }
      const next = this.pending.get(this.state.cursor + 1);
      if (!next) break;
      this.pending.delete(next.event.seq);
      this.apply(next.event, next.receivedAt, next.transport);
    }
    for (const seq of [...this.pending.keys()]) if (seq <= this.state.cursor) this.pending.delete(seq);
  }

  /**
   * @param {JobEvent} event
   * @param {number} receivedAt
   * @param {string} transport
   */
  apply(event, receivedAt, transport) {
    this.state.cursor = event.seq;
    this.bumpKnown(event.seq);
    this.emit({ type: 'event', event, receivedAt, transport });
    if (isTerminalEvent(event) && (event.type !== 'failed' || event.seq >= this.state.knownLastSeq)) {
      this.finish();
      return;
    }
    this.setState({});
  }

  requestBackfill() {
    if (this.backfilling || this.isFinished()) return;
    this.backfilling = true;
    const url = eventsUrl(this.jobUrl(), this.state.cursor, 0);
    this.deps
      .fetch(url, { headers: { Accept: 'application/json' } })
      .then(async (res) => {
        if (!res.ok) throw new Error(`backfill ${res.status}`);
        const body = await res.json();
        this.backfilling = false;
        if (this.isFinished()) return;
        this.contact();
        if (typeof body.last_seq === 'number') this.bumpKnown(body.last_seq);
        for (const ev of body.events ?? []) {
          if (ev.seq === this.state.cursor + 1) {
            this.state.stats.backfilled += 1;
            this.apply(ev, this.now(), 'poll (backfill)');
            this.drain();
            if (this.isFinished()) return;
          } else if (ev.seq > this.state.cursor + 1 && !this.pending.has(ev.seq)) {
            this.pending.set(ev.seq, { event: ev, receivedAt: this.now(), transport: 'poll (backfill)' });
          }
        }
        this.drain();
        if (this.pending.size > 0 || this.state.knownLastSeq > this.state.cursor) this.retryBackfillLater();
      })
      .catch(() => {
        this.backfilling = false;
        this.retryBackfillLater();
      });
  }

  retryBackfillLater() {
    if (this.isFinished() || this.backfillTimer !== null) return;
    // Only when a gap is still open: a stream that is merely ahead of its pings is fine.
    if (this.pending.size === 0) return;
    this.backfillTimer = this.clock.setTimeout(() => {
      this.backfillTimer = null;
      if (this.pending.size > 0) this.requestBackfill();
    }, this.settings.backoffBaseMs);
  }

  /** @param {number} seq */
  bumpKnown(seq) {
    if (typeof seq === 'number' && seq > this.state.knownLastSeq) this.state.knownLastSeq = seq;
  }

  /**
   * The server's log is shorter than our cursor (API.md): re-read the job and replay.
   * @param {string} reason
   */
  onReset(reason) {
    this.teardown();
    this.pending.clear();
    this.state.cursor = 0;
    this.state.knownLastSeq = 0;
    this.setState({ mode: 'connecting', confirmed: false, lastReason: reason, retryAt: null });
    this.loadSnapshot(true);
  }

  finish() {
    this.teardown();
    this.pending.clear();
    this.setState({ mode: 'done', confirmed: false, retryAt: null });
  }
}

/** @param {TransportName} t */
function nextLevel(t) {
  const i = LADDER.indexOf(t);
  return i >= 0 && i < LADDER.length - 1 ? LADDER[i + 1] : null;
}

/** @param {JobEvent} event */
export function isTerminalEvent(event) {
  return TERMINAL_TYPES.has(event.type);
}

/**
 * The real browser dependencies.
 * @returns {Deps}
 */
export function browserDeps() {
  return {
    createWebSocket: (url) => /** @type {any} */ (new WebSocket(url)),
    createEventSource: (url) => /** @type {any} */ (new EventSource(url)),
    fetch: (url, init) => /** @type {any} */ (fetch(url, { cache: 'no-store', ...init })),
    clock: {
      now: () => Date.now(),
      setTimeout: (fn, ms) => setTimeout(fn, ms),
      clearTimeout: (id) => clearTimeout(id),
    },
    random: () => Math.random(),
    AbortController: typeof AbortController === 'undefined' ? undefined : AbortController,
  };
}
