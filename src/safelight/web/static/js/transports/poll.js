// @ts-check
/**
 * Polling: `GET /api/jobs/{id}/events?after=N&wait=S` (API.md), long polling when `wait`
 * is above 0.  The first poll asks for no wait, so its answer proves polling at once and is
 * reported as the `welcome`; every answer is then reported as one `page` frame.  The pace
 * between polls is this module's; when to give up on polling is the manager's.
 */
import { Transport, fmtS } from './transport.js';

/** The server holds a long poll for at most this long (API.md). */
const MAX_WAIT_S = 25;

/**
 * The events URL; the manager's backfill uses it too.
 * @param {string} jobUrl
 * @param {number} after
 * @param {number} waitS
 */
export function eventsUrl(jobUrl, after, waitS) {
  const wait = Math.min(MAX_WAIT_S, Math.max(0, waitS));
  return `${jobUrl}/events?after=${after}&wait=${wait}`;
}

/**
 * Retry-After in milliseconds (seconds form only), capped at two minutes.
 * @param {string | null} raw
 */
export function parseRetryAfter(raw) {
  if (!raw) return null;
  const s = Number(raw);
  if (Number.isFinite(s) && s >= 0) return Math.min(s * 1000, 120000);
  return null;
}

/**
 * @typedef {object} PollOptions
 * @property {number} waitS     long-poll `wait` after the first poll (0 = short polling)
 * @property {number} graceMs   a poll with no answer after wait + this has failed
 * @property {number} afterMs   short-poll delay when the server gives no `poll_after_ms`
 * @property {boolean} [catchUp]  read the log of a finished job: straight on while events come
 */

export class PollTransport extends Transport {
  /** @param {import('./transport.js').TransportOptions & PollOptions} options */
  constructor(options) {
    super(options);
    this.waitS = options.waitS;
    this.graceMs = options.graceMs;
    this.afterMs = options.afterMs;
    this.catchUp = options.catchUp ?? false;
    /** @type {{abort(): void} | null} */
    this.abort = null;
  }

  open() {
    this.poll(0);
  }

  /** @param {number} waitS */
  poll(waitS) {
    if (this.closed) return;
    const Abort = this.deps.AbortController;
    const ctrl = Abort ? new Abort() : null;
    this.abort = ctrl;
    const clock = this.deps.clock;
    const started = clock.now();
    const timeoutMs = waitS * 1000 + this.graceMs;
    let timedOut = false;
    const timer = this.later(() => {
      timedOut = true;
      if (ctrl) ctrl.abort();
      this.fail(`A poll got no answer within ${fmtS(timeoutMs)}`);
    }, timeoutMs);
    const url = eventsUrl(this.jobUrl, this.cursor(), waitS);
    this.deps
      .fetch(url, ctrl ? { signal: ctrl.signal, headers: { Accept: 'application/json' } } : undefined)
      .then(async (res) => {
        if (this.closed || timedOut) return;
        this.cancel(timer);
        if (res.status === 400) {
          this.listener.close({ kind: 'reset', reason: 'The server rejected the cursor (400)' });
          return;
        }
        if (res.status === 404) {
          let problem = null;
          try {
            problem = await res.json();
          } catch {
            // not JSON
          }
          if (!this.closed) this.listener.close({ kind: 'fatal', status: 404, problem });
          return;
        }
        if (!res.ok) {
          const retryAfterMs = parseRetryAfter(res.headers.get('Retry-After'));
          this.fail({ reason: `A poll was answered ${res.status}`, retryAfterMs, answered: true });
          return;
        }
        const body = await res.json();
        if (this.closed) return;
        const events = body.events ?? [];
        const lastSeq = typeof body.last_seq === 'number' ? body.last_seq : undefined;
        if (!this.welcomed) this.reportWelcome({ type: 'welcome', transport: 'poll', last_seq: lastSeq });
        if (this.closed) return;
        this.listener.frame({ type: 'page', events, last_seq: lastSeq, terminal: Boolean(body.terminal) });
        if (this.closed) return;
        const advice = typeof body.poll_after_ms === 'number' ? body.poll_after_ms : this.afterMs;
        this.later(() => this.poll(this.waitS), this.pace(waitS, events.length > 0, clock.now() - started, advice));
      })
      .catch(() => {
        if (this.closed || timedOut) return;
        this.fail('A poll could not reach the server');
      });
  }

  /**
   * How long to wait before the next poll.
   * @param {number} waitS       the `wait` of the poll that just answered
   * @param {boolean} gotEvents
   * @param {number} elapsedMs   how long it took to answer
   * @param {number} adviceMs    the server's `poll_after_ms`
   */
  pace(waitS, gotEvents, elapsedMs, adviceMs) {
    if (this.catchUp) return gotEvents ? 0 : adviceMs;
    if (this.waitS <= 0) return adviceMs; // short polling
    if (gotEvents || waitS === 0) return 0; // long polling: straight back
    return elapsedMs < waitS * 500 ? adviceMs : 0; // a server that did not hold the request
  }

  shutdown() {
    if (this.abort) this.abort.abort();
  }
}
