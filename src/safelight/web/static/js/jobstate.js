// @ts-check
/**
 * The job as the Progress page shows it: the latest snapshot (GET /api/jobs/{id}) moved
 * forward by events, plus the timeline and the raw event log.  Pure: no DOM, no network.
 *
 * Events with seq <= the snapshot's last_seq are already reflected in the snapshot: they only
 * fill the timeline and the raw log.  Later events change the job too.  After a terminal
 * status nothing but a `retry` changes it any more (API.md: nothing is streamed after the
 * end; a retry reopens a failed job).
 */

/**
 * @typedef {import('./connection.js').JobEvent} JobEvent
 *
 * @typedef {object} LoggedEvent
 * @property {JobEvent} event
 * @property {number} receivedAt  ms since the epoch (this browser's clock)
 * @property {string} transport   ws | sse | poll | poll (backfill)
 *
 * @typedef {object} TimelineEntry
 * @property {string} type     queued | running | uploading | completed | failed | cancel_requested | cancelled | retry
 * @property {string} label
 * @property {string | null} ts
 * @property {number} attempt
 * @property {string} detail
 * @property {'done' | 'current' | 'upcoming' | 'bad'} state
 */

export const TERMINAL = new Set(['completed', 'failed', 'cancelled']);

const LIFECYCLE = new Set([
  'queued',
  'running',
  'uploading',
  'completed',
  'failed',
  'cancel_requested',
  'cancelled',
  'retry',
]);

const LABELS = /** @type {Record<string, string>} */ ({
  queued: 'Queued',
  running: 'Running',
  uploading: 'Uploading',
  completed: 'Completed',
  failed: 'Failed',
  cancel_requested: 'Cancel requested',
  cancelled: 'Cancelled',
  retry: 'Retry granted',
});

export class JobModel {
  constructor() {
    /** @type {any} */
    this.job = null;
    this.snapshotSeq = 0;
    /** @type {LoggedEvent[]} */
    this.log = [];
  }

  /** seq of the last event in the log */
  get cursor() {
    return this.log.length ? this.log[this.log.length - 1].event.seq : 0;
  }

  /**
   * @param {any} job
   * @param {boolean} reset  the server's log restarted: forget what we had
   */
  setSnapshot(job, reset = false) {
    if (reset) this.log = [];
    // A snapshot older than what the events already told us must not roll the page back.
    if (!reset && this.job && typeof job.last_seq === 'number' && job.last_seq < this.job.last_seq) return;
    this.job = structuredCloneSafe(job);
    this.snapshotSeq = typeof job.last_seq === 'number' ? job.last_seq : 0;
  }

  /**
   * @param {JobEvent} event
   * @param {number} receivedAt
   * @param {string} transport
   */
  apply(event, receivedAt, transport) {
    this.log.push({ event, receivedAt, transport });
    if (!this.job || event.seq <= this.snapshotSeq) return;
    const job = this.job;
    const d = event.data ?? {};
    if (TERMINAL.has(job.status) && event.type !== 'retry') {
      job.last_seq = event.seq;
      return;
    }
    job.last_seq = event.seq;
    job.updated_at = event.ts;
    if (typeof event.attempt === 'number') job.attempt = event.attempt;
    switch (event.type) {
      case 'queued':
      case 'position':
        if (event.type === 'queued') {
          job.status = 'queued';
          job.progress = null;
        }
        job.queue = { position: d.position ?? null, eta_s: d.eta_s ?? null };
        break;
      case 'running':
        job.status = 'running';
        job.queue = { position: null, eta_s: null };
        job.started_at = job.started_at ?? event.ts;
        break;
      case 'progress':
        job.progress = { step: d.step, total_steps: d.total_steps, fraction: d.fraction, eta_s: d.eta_s };
        if (job.status === 'queued') job.status = 'running';
        break;
      case 'preview':
        job.preview = { url: d.url, step: d.step, width: d.width, height: d.height };
        break;
      case 'uploading':
        job.status = 'uploading';
        job.upload = { images_done: d.images_done, images_total: d.images_total };
        break;
      case 'completed':
        job.status = 'completed';
        job.images = Array.isArray(d.images) ? d.images : [];
        job.duration_s = d.duration_s;
        job.finished_at = event.ts;
        if (job.progress) job.progress = { ...job.progress, fraction: 1, eta_s: 0 };
        break;
      case 'failed':
        job.status = 'failed';
        job.error = d.error ?? null;
        job.finished_at = event.ts;
        break;
      case 'cancel_requested':
        job.cancel_requested = true;
        break;
      case 'cancelled':
        job.status = 'cancelled';
        job.cancelled = { reason: d.reason, step: d.step };
        job.finished_at = event.ts;
        break;
      case 'retry':
        job.attempt = d.attempt ?? job.attempt;
        job.max_attempts = d.max_attempts ?? job.max_attempts;
        job.status = 'queued';
        job.error = null;
        job.finished_at = null;
        job.cancel_requested = false;
        job.progress = null;
        break;
      default:
        break;
    }
  }

  /**
   * The status timeline (API.md: queued -> running -> uploading -> completed, or failed /
   * cancelled, each with its timestamp), with attempts, plus the steps still to come.
   * @returns {TimelineEntry[]}
   */
  timeline() {
    const job = this.job;
    /** @type {TimelineEntry[]} */
    const out = [];
    const events = this.log.map((l) => l.event).filter((e) => LIFECYCLE.has(e.type));
    if (events.length) {
      for (const e of events) {
        const prev = out[out.length - 1];
        if (e.type === 'uploading' && prev?.type === 'uploading' && prev.attempt === e.attempt) {
          // One `uploading` event per image: one timeline row, counting up.
          prev.detail = detailOf(e);
          continue;
        }
        out.push({
          type: e.type,
          label: LABELS[e.type] ?? e.type,
          ts: e.ts,
          attempt: e.type === 'retry' ? (e.data?.attempt ?? e.attempt) : e.attempt,
          detail: detailOf(e),
          state: e.type === 'failed' ? 'bad' : 'done',
        });
      }
    } else if (job) {
      // No events yet: what the snapshot knows.
      out.push({ type: 'queued', label: 'Queued', ts: job.created_at ?? null, attempt: job.attempt ?? 1, detail: '', state: 'done' });
      if (job.started_at) out.push({ type: 'running', label: 'Running', ts: job.started_at, attempt: job.attempt ?? 1, detail: '', state: 'done' });
      if (TERMINAL.has(job.status)) {
        out.push({ type: job.status, label: LABELS[job.status], ts: job.finished_at ?? null, attempt: job.attempt ?? 1, detail: '', state: job.status === 'failed' ? 'bad' : 'done' });
      }
    }
    if (job && !TERMINAL.has(job.status) && out.length) {
      out[out.length - 1].state = 'current';
      const order = ['queued', 'running', 'uploading', 'completed'];
      const at = order.indexOf(job.status);
      for (const type of order.slice(at + 1)) {
        out.push({ type, label: LABELS[type], ts: null, attempt: job.attempt ?? 1, detail: '', state: 'upcoming' });
      }
    }
    return out;
  }

  /** The raw log as plain JSON (copy all / download). */
  exportLog() {
    return this.log.map(({ event, receivedAt, transport }) => ({
      seq: event.seq,
      type: event.type,
      attempt: event.attempt,
      ts: event.ts,
      received_at: new Date(receivedAt).toISOString(),
      transport,
      data: event.data,
    }));
  }

  /**
   * Gaps and repeats in the applied log (should always be empty).
   * @returns {{missing: number[], repeated: number[]}}
   */
  audit() {
    const seen = new Set();
    /** @type {number[]} */
    const repeated = [];
    /** @type {number[]} */
    const missing = [];
    let expect = this.log.length ? this.log[0].event.seq : 1;
    for (const { event } of this.log) {
      if (seen.has(event.seq)) repeated.push(event.seq);
      seen.add(event.seq);
      while (expect < event.seq) missing.push(expect++);
      expect = Math.max(expect, event.seq + 1);
    }
    return { missing, repeated };
  }
}

/** @param {JobEvent} e */
function detailOf(e) {
  const d = e.data ?? {};
  switch (e.type) {
    case 'queued':
      return typeof d.position === 'number' ? `position ${d.position}` : '';
    case 'running':
      return d.worker ? `worker ${d.worker}` : '';
    case 'uploading':
      if (typeof d.images_total !== 'number') return '';
      return typeof d.images_done === 'number' && d.images_total > 1
        ? `${d.images_done} of ${d.images_total} images stored`
        : `${d.images_total} image${d.images_total === 1 ? '' : 's'}`;
    case 'completed':
      return typeof d.duration_s === 'number' ? `in ${d.duration_s.toFixed(1)} s` : '';
    case 'failed':
      return d.error?.code ?? d.error?.type ?? '';
    case 'cancelled':
      return [d.reason, typeof d.step === 'number' ? `at step ${d.step}` : ''].filter(Boolean).join(', ');
    case 'retry':
      return [typeof d.attempt === 'number' ? `attempt ${d.attempt} of ${d.max_attempts}` : '', d.reason ?? '']
        .filter(Boolean)
        .join(' · ');
    default:
      return '';
  }
}

/** @param {any} value */
function structuredCloneSafe(value) {
  try {
    return structuredClone(value);
  } catch {
    return JSON.parse(JSON.stringify(value));
  }
}
