// @ts-check
/**
 * The job's history beyond its own log, on the progress page:
 *  - the family strip ("Attempt 1 failed (provider) → Attempt 2 completed → Restarted with
 *    edited prompt → …", each linked) and a side-by-side compare of any two finished
 *    images of the family, from GET /api/jobs/{id}/family;
 *  - the webhook deliveries and their attempts in the raw view, from
 *    GET /api/jobs/{id}/webhook-deliveries.
 * Both are readable with the share link.  All server text goes in with textContent.
 */
import { jobPath, request } from './api.js';
import { byId, h } from './dom.js';
import { clockTime } from './format.js';

const OUTCOME = /** @type {Record<string, string>} */ ({
  queued: 'queued',
  running: 'running',
  uploading: 'saving',
  completed: 'completed',
  failed: 'failed',
  cancelled: 'cancelled',
  worker_lost: 'lost its worker',
});

const RESTART = /** @type {Record<string, string>} */ ({
  edited_prompt: 'Restarted with edited prompt',
  changed_settings: 'Restarted with changed settings',
  same_settings: 'Restarted with same settings',
});

/** @param {string} id */
const short = (id) => id.slice(0, 6);

export class History {
  /** @param {string} jobId */
  constructor(jobId) {
    this.jobId = jobId;
    this.familyKey = '';
    this.familyBusy = false;
    /** @type {any} */
    this.family = null;
    this.hooksKey = '';
    this.hooksBusy = false;
    /** @type {any} */
    this.hooksTimer = null;
    byId('compare-a').addEventListener('change', () => this.showCompare());
    byId('compare-b').addEventListener('change', () => this.showCompare());
  }

  /**
   * Called on every render of the job: refetch only when something the views show changed.
   * @param {any} job
   */
  update(job) {
    const familyKey = `${job.status}:${job.attempt}`;
    if (familyKey !== this.familyKey && !this.familyBusy) {
      this.familyKey = familyKey;
      this.loadFamily();
    }
    if (job.webhook) {
      const hooksKey = `${job.status}:${job.last_seq}`;
      if (hooksKey !== this.hooksKey) {
        this.hooksKey = hooksKey;
        this.loadHooks();
      }
    }
  }

  async loadFamily() {
    this.familyBusy = true;
    try {
      const res = await request(`${jobPath(this.jobId)}/family`);
      if (res.ok) {
        this.family = res.data;
        this.renderFamily();
      }
    } catch {
      // offline: the next render retries
      this.familyKey = '';
    } finally {
      this.familyBusy = false;
    }
  }

  renderFamily() {
    const family = this.family;
    const jobs = /** @type {any[]} */ (family?.jobs ?? []);
    const card = byId('family-card');
    const interesting = jobs.length > 1 || jobs.some((j) => j.attempts.length > 1);
    card.hidden = !interesting;
    if (!interesting) return;
    /** @type {HTMLElement[]} */
    const items = [];
    let previous = null;
    for (const job of jobs) {
      const here = job.id === this.jobId;
      if (job.change) {
        const from = previous && previous.id === job.parent_id ? '' : ` (from ${short(job.parent_id)})`;
        const link = h('a', { href: job.links.page, text: `${RESTART[job.change.kind] ?? 'Restarted'}${from}` });
        const parts = [link];
        if (job.change.prompt) parts.push(diffView(job.change.prompt));
        items.push(h('li', { className: 'family-item family-restart', dataset: { job: job.id, kind: job.change.kind } }, parts));
      }
      for (const a of job.attempts) {
        const reason = a.outcome === 'failed' && a.error_type ? ` (${a.error_type})` : '';
        const text = `Attempt ${a.attempt} ${OUTCOME[a.outcome] ?? a.outcome}${reason}`;
        const link = h('a', { href: job.links.page, text, 'aria-current': here && a.attempt === job.attempt ? 'step' : null });
        if (job.thumbnail && a.attempt === job.attempt && a.outcome === 'completed') {
          link.prepend(h('img', { className: 'family-thumb', src: job.thumbnail, alt: '', width: '28', height: '28', loading: 'lazy' }));
        }
        items.push(
          h('li', { className: 'family-item', dataset: { job: job.id, attempt: String(a.attempt), outcome: a.outcome } }, [link]),
        );
      }
      previous = job;
    }
    byId('family-strip').replaceChildren(...items);
    const note = byId('family-note');
    note.hidden = !family.truncated;
    note.textContent = family.truncated ? 'This family is large: only part of it is shown.' : '';
    this.renderComparePickers(jobs);
  }

  /** @param {any[]} jobs */
  renderComparePickers(jobs) {
    /** @type {{value: string, label: string, jobId: string}[]} */
    const options = [];
    for (const job of jobs) {
      job.images.forEach((/** @type {string} */ url, /** @type {number} */ i) => {
        const mine = job.id === this.jobId ? 'this job' : `job ${short(job.id)}`;
        const n = job.images.length > 1 ? ` · image ${i + 1}` : '';
        options.push({ value: url, label: `${mine} · attempt ${job.attempt}${n}`, jobId: job.id });
      });
    }
    const box = byId('compare');
    box.hidden = options.length < 2;
    if (options.length < 2) return;
    const a = /** @type {HTMLSelectElement} */ (byId('compare-a'));
    const b = /** @type {HTMLSelectElement} */ (byId('compare-b'));
    const keepA = a.value;
    const keepB = b.value;
    for (const select of [a, b]) {
      select.replaceChildren(...options.map((o) => h('option', { value: o.value, text: o.label })));
    }
    // Default: this job's image against the one before it in the family.
    const mineIndex = Math.max(0, options.findIndex((o) => o.jobId === this.jobId));
    const otherIndex = mineIndex > 0 ? mineIndex - 1 : 1;
    a.value = options.some((o) => o.value === keepA) ? keepA : options[otherIndex].value;
    b.value = options.some((o) => o.value === keepB) ? keepB : options[mineIndex].value;
    this.showCompare();
  }

  showCompare() {
    for (const side of ['a', 'b']) {
      const select = /** @type {HTMLSelectElement} */ (byId(`compare-${side}`));
      const img = /** @type {HTMLImageElement} */ (byId(`compare-img-${side}`));
      const option = select.selectedOptions[0];
      if (!option) continue;
      if (img.getAttribute('src') !== option.value) img.src = option.value;
      img.alt = `Image of ${option.textContent}`;
      byId(`compare-cap-${side}`).textContent = option.textContent ?? '';
    }
  }

  async loadHooks() {
    if (this.hooksBusy) {
      this.hooksKey = ''; // ask again when this one is done
      return;
    }
    this.hooksBusy = true;
    try {
      const res = await request(`${jobPath(this.jobId)}/webhook-deliveries`);
      if (res.ok) this.renderHooks(res.data);
    } catch {
      this.hooksKey = '';
    } finally {
      this.hooksBusy = false;
    }
  }

  /** @param {any} data */
  renderHooks(data) {
    const box = byId('hooks');
    box.hidden = !data.webhook;
    if (!data.webhook) return;
    byId('hooks-target').textContent = `${data.webhook.url} · ${data.webhook.events.join(', ')}`;
    const rows = /** @type {any[]} */ (data.deliveries).map((d) =>
      h('tr', { dataset: { seq: String(d.seq), status: d.status } }, [
        h('td', { className: 'raw-seq', text: String(d.seq) }),
        h('td', { text: d.event }),
        h('td', { className: 'hook-status', text: d.status }),
        h('td', { className: 'raw-data', text: d.attempts.map(attemptText).join(' · ') || 'not tried yet' }),
        h('td', { text: d.next_attempt_at ? `next ${clockTime(d.next_attempt_at)}` : '' }),
      ]),
    );
    byId('hooks-body').replaceChildren(...rows);
    // Deliveries settle after their events: look again shortly while any is pending.
    clearTimeout(this.hooksTimer);
    if (data.deliveries.some((/** @type {any} */ d) => d.status === 'pending')) {
      this.hooksTimer = setTimeout(() => this.loadHooks(), 1500);
    }
  }
}

/** @param {any} a */
function attemptText(a) {
  const status = a.status_code === null ? 'no response' : `HTTP ${a.status_code}`;
  const error = a.error && a.status_code === null ? ` (${a.error})` : '';
  return `#${a.n} ${a.outcome}: ${status}${error}, ${a.latency_ms} ms`;
}

/**
 * A prompt word diff as text nodes in <del>/<ins> (never HTML from the server).
 * @param {{op: string, text: string}[]} ops
 */
function diffView(ops) {
  return h(
    'span',
    { className: 'family-diff' },
    ops.map((o) => (o.op === 'added' ? h('ins', { text: o.text }) : o.op === 'removed' ? h('del', { text: o.text }) : h('span', { text: o.text }))),
  );
}
