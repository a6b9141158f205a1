// @ts-check
/**
 * WebSocket: `GET /api/jobs/{id}/ws?after=N` (API.md).  Every message is one JSON frame:
 * `welcome`, `ping`, or an event; a close is a failure (the manager decides what follows).
 */
import { Transport, parseJson } from './transport.js';

/** 1012 "service restart": the server is going down on purpose (API.md). */
const SERVICE_RESTART = 1012;

export class WsTransport extends Transport {
  /** @returns {string} */
  url() {
    return `${this.jobUrl}/ws?after=${this.cursor()}`.replace(/^http/, 'ws');
  }

  open() {
    const ws = this.create(() => this.deps.createWebSocket(this.url()), 'WebSocket');
    if (!ws) return;
    this.ws = ws;
    ws.onmessage = (ev) => {
      const msg = parseJson(ev.data);
      if (msg) this.deliver(msg);
    };
    ws.onerror = () => {
      // A close event always follows; that is where the failure is reported.
    };
    ws.onclose = (ev) => {
      const code = ev && typeof ev.code === 'number' ? ev.code : 1006;
      let reason;
      if (!this.welcomed) reason = `WebSocket closed before it was confirmed (code ${code})`;
      else if (code === SERVICE_RESTART) reason = 'The server is restarting';
      else reason = `WebSocket connection dropped (code ${code})`;
      this.fail(reason);
    };
  }

  shutdown() {
    const ws = this.ws;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    ws.close(1000, 'client done');
  }
}
