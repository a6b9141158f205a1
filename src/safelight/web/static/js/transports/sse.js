// @ts-check
/**
 * Server-Sent Events: `GET /api/jobs/{id}/stream?after=N` (API.md).  `welcome` and `ping`
 * are named events, job events are plain `message`s.  The browser's own EventSource
 * reconnect is never used: the manager (../connection.js) reconnects from its cursor.
 */
import { Transport, parseJson } from './transport.js';

export class SseTransport extends Transport {
  /** @returns {string} */
  url() {
    return `${this.jobUrl}/stream?after=${this.cursor()}`;
  }

  open() {
    const es = this.create(() => this.deps.createEventSource(this.url()), 'SSE');
    if (!es) return;
    this.es = es;
    es.addEventListener('welcome', (ev) => this.deliver({ ...(parseJson(ev.data) ?? {}), type: 'welcome' }));
    es.addEventListener('ping', (ev) => this.deliver({ ...(parseJson(ev.data) ?? {}), type: 'ping' }));
    es.addEventListener('message', (ev) => {
      const msg = parseJson(ev.data);
      if (msg) this.deliver(msg);
    });
    es.addEventListener('error', () => {
      if (this.closed) return;
      // Stop the browser's reconnect at once; ours runs with the cursor and jittered backoff.
      es.close();
      this.fail(
        this.welcomed ? 'SSE stream dropped' : 'SSE stream was refused or broke before it was confirmed',
      );
    });
  }

  shutdown() {
    if (this.es) this.es.close();
  }
}
