// @ts-check
/**
 * What the three browser transports share (ws.js, sse.js, poll.js): the types they report
 * in, and a small base class.  A transport knows how to open one connection to one
 * endpoint, read it and close it; it reports what it read to a listener and decides
 * nothing about the ladder.  The manager (../connection.js) decides when to prove, step
 * down, back off, probe up, dedupe and backfill.  Pure logic: no DOM.
 *
 * Every listener call but `failure` means the server answered (the manager's "last
 * contact").  After `close()` a transport reports nothing more.
 */

/** @typedef {'ws' | 'sse' | 'poll'} TransportName */

/**
 * @typedef {object} JobEvent
 * @property {string} job_id
 * @property {number} seq
 * @property {string} type
 * @property {number} attempt
 * @property {string} ts
 * @property {Record<string, any>} data
 */

/**
 * @typedef {object} Clock
 * @property {() => number} now  milliseconds since the epoch
 * @property {(fn: () => void, ms: number) => any} setTimeout
 * @property {(id: any) => void} clearTimeout
 */

/**
 * @typedef {object} WebSocketLike
 * @property {((ev: any) => void) | null} onopen
 * @property {((ev: {data: any}) => void) | null} onmessage
 * @property {((ev: any) => void) | null} onerror
 * @property {((ev: {code?: number, reason?: string}) => void) | null} onclose
 * @property {(code?: number, reason?: string) => void} close
 */

/**
 * @typedef {object} EventSourceLike
 * @property {(type: string, fn: (ev: any) => void) => void} addEventListener
 * @property {() => void} close
 */

/**
 * @typedef {object} ResponseLike
 * @property {boolean} ok
 * @property {number} status
 * @property {{get(name: string): string | null}} headers
 * @property {() => Promise<any>} json
 */

/**
 * What the transports need from the outside world; injected so tests use fakes.
 * @typedef {object} TransportDeps
 * @property {(url: string) => WebSocketLike} createWebSocket
 * @property {(url: string) => EventSourceLike} createEventSource
 * @property {(url: string, init?: {signal?: any, headers?: Record<string, string>}) => Promise<ResponseLike>} fetch
 * @property {Clock} clock
 * @property {(new () => {signal: any, abort(): void}) | undefined} [AbortController]
 */

/**
 * A stream's `welcome`, or polling's first answer (API.md "Three transports, one cursor").
 * @typedef {{type: 'welcome', last_seq?: number, status?: string, reset?: boolean, [key: string]: any}} Welcome
 */

/**
 * One answer of a poll: the events after the cursor and how far the log goes.
 * @typedef {object} Page
 * @property {'page'} type
 * @property {JobEvent[]} events
 * @property {number | undefined} last_seq
 * @property {boolean} terminal
 */

/**
 * A job event (has `seq`), a stream's `ping`, a poll's page, or a control frame this
 * client does not know (harmless).
 * @typedef {JobEvent | Page | {type?: string, last_seq?: number, [key: string]: any}} Frame
 */

/**
 * @typedef {object} Failure
 * @property {string} reason             for people: shown in the connection panel
 * @property {number | null} [retryAfterMs]  the server's Retry-After, if it gave one
 * @property {boolean} [answered]        the server answered (with an error status)
 */

/**
 * The server ended the connection for a reason no reconnect of this transport can fix.
 * @typedef {{kind: 'reset', reason: string} | {kind: 'fatal', status: number, problem: any}} Close
 */

/**
 * @typedef {object} TransportListener
 * @property {(welcome: Welcome) => void} welcome  the transport works (not yet for a reset)
 * @property {(frame: Frame) => void} frame
 * @property {(failure: Failure) => void} failure  broke; a reconnect or a lower level may fix it
 * @property {(close: Close) => void} close
 */

/**
 * @typedef {object} TransportOptions
 * @property {string} jobUrl        http(s) URL of the job, e.g. "http://host/api/jobs/abc"
 * @property {() => number} cursor  the seq of the last applied event, read at each (re)request
 * @property {TransportDeps} deps
 * @property {TransportListener} listener
 */

/** The base of ws.js, sse.js and poll.js. */
export class Transport {
  /** @param {TransportOptions} options */
  constructor({ jobUrl, cursor, deps, listener }) {
    this.jobUrl = jobUrl;
    this.cursor = cursor;
    this.deps = deps;
    this.listener = listener;
    this.closed = false;
    /** a `welcome` was reported on this connection */
    this.welcomed = false;
    /** @type {Set<any>} */
    this.timers = new Set();
  }

  /** Start connecting; what happens is reported to the listener. */
  open() {
    throw new Error('Transport.open is abstract');
  }

  /** Stop: close the connection, clear the timers, report nothing more.  Idempotent. */
  close() {
    if (this.closed) return;
    this.closed = true;
    for (const id of this.timers) this.deps.clock.clearTimeout(id);
    this.timers.clear();
    try {
      this.shutdown();
    } catch {
      // closing twice or in a bad state is harmless
    }
  }

  /** Release the underlying connection (subclasses). */
  shutdown() {}

  /**
   * Make the underlying connection; if the browser refuses (no such API, a blocked URL),
   * report it on the next turn, as a refused connection would, never from inside open().
   * @template T
   * @param {() => T} make
   * @param {string} label  e.g. "WebSocket"
   * @returns {T | null}
   */
  create(make, label) {
    try {
      return make();
    } catch {
      this.later(() => this.fail(`${label} is not available`), 0);
      return null;
    }
  }

  /**
   * A timer that `close()` clears.
   * @param {() => void} fn
   * @param {number} ms
   */
  later(fn, ms) {
    const id = this.deps.clock.setTimeout(() => {
      this.timers.delete(id);
      if (!this.closed) fn();
    }, ms);
    this.timers.add(id);
    return id;
  }

  /** @param {any} id */
  cancel(id) {
    if (id === null || id === undefined) return;
    this.deps.clock.clearTimeout(id);
    this.timers.delete(id);
  }

  /**
   * A parsed stream message: an event, a welcome, or another control frame.
   * @param {any} msg
   */
  deliver(msg) {
    if (this.closed) return;
    if (typeof msg.seq !== 'number' && msg.type === 'welcome') this.reportWelcome(msg);
    else this.listener.frame(msg);
  }

  /** @param {Welcome} welcome */
  reportWelcome(welcome) {
    if (this.closed) return;
    this.welcomed = true;
    this.listener.welcome(welcome);
  }

  /** @param {Failure | string} failure */
  fail(failure) {
    if (this.closed) return;
    this.listener.failure(typeof failure === 'string' ? { reason: failure } : failure);
  }
}

/**
 * A JSON object from a message's data, or null.
 * @param {any} data
 */
export function parseJson(data) {
  if (typeof data !== 'string') return null;
  try {
    const value = JSON.parse(data);
    return value && typeof value === 'object' ? value : null;
  } catch {
    return null;
  }
}

/** @param {number} ms */
export function fmtS(ms) {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`;
}
