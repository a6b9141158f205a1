// @ts-check
/**
 * Generation Progress (/jobs/{id}).  The connection manager (connection.js) delivers the
 * snapshot and the events in seq order; JobModel (jobstate.js) turns them into the job as
 * shown; this module only renders and wires the buttons.
 */
import {
  NetworkError,
  cancelJob,
  createJob,
  newIdempotencyKey,
  problemText,
  retryJob,
  settingsToBody,
} from './api.js';
import {
  ConnectionManager,
  TRANSPORT_LABEL,
  browserDeps,
  parseTransport,
  settingsFromQuery,
} from './connection.js';
import { byId, copyText, downloadText, h, icon } from './dom.js';
import { ago, bytes, clockTime, duration, eta, percent, snippet } from './format.js';
import { History } from './history.js';
import { JobModel, TERMINAL } from './jobstate.js';
import { addRecent, getToken, listRecent, saveToken, updateRecent } from './store.js';

/** @typedef {import('./connection.js').ConnectionState} ConnectionState */

const jobId = decodeURIComponent(location.pathname.replace(/^\/jobs\//, '').replace(/\/$/, ''));
const params = new URLSearchParams(location.search);
const token = getToken(jobId);
const canManage = Boolean(token);

const model = new JobModel();
const history = new History(jobId);
const manager = new ConnectionManager({
  jobId,
  baseUrl: location.origin,
  deps: browserDeps(),
  settings: settingsFromQuery(params),
  forced: parseTransport(params.get('transport')),
});

const main = byId('main');
/** @type {ConnectionState} */
let conn = manager.getState();
let cancelling = false;
let busyRetry = false;
/** @type {string | null} */
let restartKey = null;
let sawLive = false; // the job was unfinished when this page first saw it
let notifiedEnd = false;
/** @type {any} */
let flashTimer = null;
/** @type {any} */
let renderTimer = null;
let renderedRows = 0;
let lastAnnounced = '';
let lastMilestone = -1;
/** @type {string | null} */
let shownPreview = null;
let fatal = false;
/** @type {any} */
let retryLaterTimer = null;
let retryLaterAt = 0;

// ---------------------------------------------------------------- labels

const STATUS_TITLE = /** @type {Record<string, string>} */ ({
  queued: 'Queued',
  running: 'Developing',
  uploading: 'Saving images',
  completed: 'Completed',
  failed: 'Failed',
  cancelled: 'Cancelled',
});

/** Plain words per error type (API.md error object). */
const ERROR_TYPES = /** @type {Record<string, {label: string, title: string, advice: string}>} */ ({
  validation: { label: 'Validation', title: 'The settings were not accepted', advice: 'Change the prompt or settings and start again.' },
  provider: { label: 'Provider', title: 'The image provider ran into a problem', advice: 'This is usually temporary: retrying often works.' },
  timeout: { label: 'Timeout', title: 'The generation took too long', advice: 'Try again, or use fewer steps or a smaller size.' },
  network: { label: 'Network', title: 'A network problem interrupted the job', advice: 'Check the connection; retrying usually works.' },
  storage: { label: 'Storage', title: 'The result could not be saved', advice: 'The server is short on storage. Retry a little later.' },
  internal: { label: 'Internal', title: 'Something went wrong on our side', advice: 'Retry; if it keeps happening, copy the details for support.' },
});

const STEP_LABEL = /** @type {Record<string, string>} */ ({
  retry: 'Retry',
  retry_later: 'Retry in 30 s',
  edit_prompt: 'Edit prompt',
  switch_to_polling: 'Switch to polling',
  restart: 'Restart',
  contact_support: 'Copy details for support',
});

// ---------------------------------------------------------------- render

function scheduleRender() {
  if (renderTimer !== null) return;
  renderTimer = setTimeout(() => {
    renderTimer = null;
    render();
  }, 40);
}

function render() {
  const job = model.job;
  if (!job || fatal) return;
  main.dataset.status = (job.cancel_requested || cancelling) && !TERMINAL.has(job.status) ? 'cancelling' : job.status;
  renderHead(job);
  renderProgress(job);
  renderStage(job);
  renderError(job);
  renderActions(job);
  renderTimeline();
  renderSettings(job);
  renderRaw();
  history.update(job);
  renderTitle(job);
  announce(job);
  tick();
  updateRecent(job.id, { status: job.status });
}

/** @param {any} job */
function renderHead(job) {
  byId('job-id').textContent = job.id;
  const title = byId('status-title');
  const label = (job.cancel_requested || cancelling) && !TERMINAL.has(job.status) ? 'Cancelling…' : (STATUS_TITLE[job.status] ?? job.status);
  const iconName = job.status === 'completed' ? 'check' : job.status === 'failed' ? 'alert' : job.status === 'cancelled' ? 'stop' : 'sparkle';
  title.replaceChildren(h('span', { className: 'status-icon' }, [icon(iconName)]), h('span', { id: 'status-text', text: label }));
  byId('status-sub').textContent = subline(job);
  byId('readonly-chip').hidden = canManage;
}

/** @param {any} job */
function subline(job) {
  const parts = [];
  const att = attemptText(job);
  if (att) parts.push(att);
  switch (job.status) {
    case 'queued':
      parts.push(job.queue?.position != null ? queueText(job.queue) : 'Waiting for a worker');
      break;
    case 'running':
      if (job.progress?.total_steps) parts.push(`Step ${job.progress.step} of ${job.progress.total_steps}`);
      else parts.push('Starting');
      break;
    case 'uploading':
      parts.push('Storing the finished images');
      break;
    case 'completed': {
      const n = job.images?.length ?? 0;
      parts.push(`${n} image${n === 1 ? '' : 's'}`);
      const took = job.duration_s ?? secondsBetween(job.started_at, job.finished_at);
      if (took != null) parts.push(`finished in ${duration(took)}`);
      break;
    }
    case 'failed':
      parts.push(job.error?.message ?? 'The job failed');
      break;
    case 'cancelled':
      parts.push(job.cancelled?.step != null ? `Stopped at step ${job.cancelled.step}` : 'Stopped before it finished');
      break;
    default:
      break;
  }
  return parts.join(' · ');
}

/** @param {any} job */
function attemptText(job) {
  const max = job.max_attempts ?? 1;
  const a = job.attempt ?? 1;
  if (a > 1 || (job.status === 'failed' && max > 1)) return `Attempt ${a} of ${max}`;
  return '';
}

/** @param {{position: number | null, eta_s: number | null}} q */
function queueText(q) {
  if (q.position == null) return '';
  const pos = q.position <= 0 ? 'Next in line' : `Position ${q.position} in the queue`;
  return q.eta_s != null ? `${pos} · starts in ${duration(q.eta_s)}` : pos;
}

/**
 * @param {string | null | undefined} a
 * @param {string | null | undefined} b
 */
function secondsBetween(a, b) {
  if (!a || !b) return null;
  const d = (Date.parse(b) - Date.parse(a)) / 1000;
  return Number.isFinite(d) ? d : null;
}

/** @param {any} job */
function renderProgress(job) {
  const p = job.progress;
  let fraction = p?.fraction ?? 0;
  if (job.status === 'completed') fraction = 1;
  if (job.status === 'uploading') fraction = Math.max(fraction, 1);
  const pct = percent(fraction);
  byId('progress-pct').textContent = `${pct}%`;
  byId('progress-fill').style.width = `${pct}%`;
  const bar = byId('progress-bar');
  bar.setAttribute('aria-valuenow', String(pct));
  bar.setAttribute('aria-valuetext', p?.total_steps ? `Step ${p.step} of ${p.total_steps}, ${pct} percent` : `${pct} percent`);
  let step = '';
  if (job.status === 'queued') step = 'In the queue';
  else if (job.status === 'uploading') {
    const u = job.upload;
    step = u?.images_total ? `Saving image ${Math.min(u.images_done + 1, u.images_total)} of ${u.images_total}` : 'Saving images';
  } else if (p?.total_steps) step = `Step ${p.step} of ${p.total_steps}`;
  else if (job.status === 'running') step = 'Starting';
  else if (job.status === 'completed') step = `Step ${job.settings?.steps ?? ''} of ${job.settings?.steps ?? ''}`;
  else if (job.status === 'failed' && p?.total_steps) step = `Failed at step ${p.step} of ${p.total_steps}`;
  else if (job.status === 'cancelled' && p?.total_steps) step = `Stopped at step ${p.step} of ${p.total_steps}`;
  else step = STATUS_TITLE[job.status] ?? '';
  byId('progress-step').textContent = step;
  byId('progress-eta').textContent = job.status === 'running' && p ? eta(p.eta_s) : '';
  byId('queue-pos').textContent = job.status === 'queued' ? queueText(job.queue ?? { position: null, eta_s: null }) : '';
  byId('attempt-text').textContent = `${job.attempt ?? 1} of ${job.max_attempts ?? 1}`;
}

/** @param {any} job */
function renderStage(job) {
  const stage = byId('stage');
  const w = job.settings?.width;
  const hgt = job.settings?.height;
  if (w && hgt) stage.style.aspectRatio = `${w} / ${hgt}`;
  stage.dataset.running = String(job.status === 'running');
  const done = job.status === 'completed' && (job.images?.length ?? 0) > 0;
  stage.dataset.state = done ? 'results' : job.preview?.url ? 'preview' : 'empty';
  const text = byId('stage-text');
  if (job.status === 'queued') text.textContent = 'Waiting in the queue…';
  else if (job.status === 'running' || job.status === 'uploading') text.textContent = 'Developing…';
  else if (job.status === 'failed') text.textContent = 'No preview was made before the failure.';
  else if (job.status === 'cancelled') text.textContent = 'Cancelled before the first preview.';
  const url = job.preview?.url ?? null;
  if (url && url !== shownPreview) {
    shownPreview = url;
    const img = new Image();
    img.onload = () => {
      if (shownPreview !== url) return;
      const el = /** @type {HTMLImageElement} */ (byId('preview-img'));
      el.src = url;
      el.hidden = false;
      byId('stage-empty').hidden = true;
    };
    img.src = url;
  }
  const caption = byId('preview-caption');
  if (job.preview?.url) {
    caption.hidden = false;
    const last = TERMINAL.has(job.status) ? 'Last preview' : 'Preview';
    caption.textContent = `${last} · step ${job.preview.step}`;
  } else caption.hidden = true;
  const alt = `Preview of “${snippet(job.settings?.prompt ?? '', 100)}” at step ${job.preview?.step ?? 0}`;
  byId('preview-img').setAttribute('alt', alt);
  renderResults(job, done);
}

/**
 * @param {any} job
 * @param {boolean} done
 */
function renderResults(job, done) {
  const box = byId('results');
  box.hidden = !done;
  if (!done) return;
  const list = byId('result-list');
  if (list.dataset.for === String(job.last_seq) && list.childElementCount) return;
  list.dataset.for = String(job.last_seq);
  box.dataset.count = String(job.images.length);
  const prompt = snippet(job.settings?.prompt ?? '', 100);
  list.replaceChildren(
    ...job.images.map((/** @type {any} */ img, /** @type {number} */ i) => {
      const sep = img.url.includes('?') ? '&' : '?';
      const name = `safelight-${job.id.slice(0, 8)}-${i + 1}.png`;
      return h('li', { className: 'result', dataset: { index: String(i) } }, [
        h('a', { className: 'result-img-link', href: img.url, target: '_blank', rel: 'noopener', 'aria-label': `Open image ${i + 1} in a new tab` }, [
          h('img', { src: img.url, alt: `Image ${i + 1} of “${prompt}”`, width: img.width, height: img.height, loading: 'lazy' }),
        ]),
        h('div', { className: 'result-foot' }, [
          h('span', { className: 'result-meta', text: [`${img.width} × ${img.height}`, bytes(img.bytes), img.seed != null ? `seed ${img.seed}` : ''].filter(Boolean).join(' · ') }),
          h('div', { className: 'btn-row' }, [
            h('a', { className: 'btn btn-sm btn-primary', href: `${img.url}${sep}download=1`, download: name, dataset: { action: 'download' } }, [icon('download'), 'Download']),
            h('a', { className: 'btn btn-sm', href: img.url, target: '_blank', rel: 'noopener', dataset: { action: 'open' } }, [icon('open'), 'Open']),
          ]),
        ]),
      ]);
    }),
  );
}

/** @param {any} job */
function renderError(job) {
  const card = byId('error-card');
  const err = job.status === 'failed' ? job.error : null;
  card.hidden = !err;
  if (!err) return;
  const kind = ERROR_TYPES[err.type] ?? ERROR_TYPES.internal;
  byId('error-type').textContent = `${kind.label} error`;
  byId('error-title').textContent = kind.title;
  byId('error-message').textContent = err.message ?? '';
  byId('error-advice').textContent = kind.advice;
  byId('error-raw').textContent = JSON.stringify(err, null, 2);
  const key = JSON.stringify([err, job.attempt, job.max_attempts, busyRetry, retryLaterAt > 0]);
  const actions = byId('error-actions');
  if (actions.dataset.key === key) return;
  actions.dataset.key = key;
  const steps = Array.isArray(err.next_steps) && err.next_steps.length ? err.next_steps : ['restart'];
  const buttons = [];
  for (const step of steps) {
    if ((step === 'retry' || step === 'retry_later') && !canManage) continue;
    if (step === 'retry') continue; // the main Retry button below carries attempts and reasons
    if (step === 'edit_prompt') {
      buttons.push(h('a', { className: 'btn btn-sm', href: `/?from=${encodeURIComponent(job.id)}`, dataset: { step } }, [icon('edit'), STEP_LABEL[step]]));
      continue;
    }
    const label = step === 'retry_later' && retryLaterAt ? 'Cancel scheduled retry' : (STEP_LABEL[step] ?? step);
    const btn = h('button', { type: 'button', className: 'btn btn-sm', dataset: { step } }, [label]);
    if (step === 'retry_later' && retryBlockReason(job)) btn.setAttribute('disabled', '');
    buttons.push(btn);
  }
  actions.replaceChildren(...buttons);
}

/**
 * Why Retry cannot be used, or '' when it can.
 * @param {any} job
 */
function retryBlockReason(job) {
  if (!canManage) return 'Only the browser that created this job can retry it.';
  if (job.status !== 'failed') return '';
  if (job.error && job.error.retryable === false) {
    return `Retry is not available: ${ERROR_TYPES[job.error.type]?.label.toLowerCase() ?? 'this'} errors are not fixed by running again. Edit the prompt or restart instead.`;
  }
  if ((job.attempt ?? 1) >= (job.max_attempts ?? 1)) {
    return `Retry is not available: all ${job.max_attempts} attempts have been used. Restart it as a new job instead.`;
  }
  return '';
}

/** @param {any} job */
function renderActions(job) {
  const terminal = TERMINAL.has(job.status);
  const cancelBtn = /** @type {HTMLButtonElement} */ (byId('cancel-btn'));
  cancelBtn.hidden = !canManage || terminal;
  const pending = cancelling || Boolean(job.cancel_requested);
  cancelBtn.disabled = pending;
  cancelBtn.setAttribute('aria-busy', String(pending));
  /** @type {HTMLElement} */ (cancelBtn.querySelector('.btn-label')).textContent = pending ? 'Cancelling…' : 'Cancel';

  const retryBtn = /** @type {HTMLButtonElement} */ (byId('retry-btn'));
  const reasonEl = byId('retry-reason');
  const failed = job.status === 'failed';
  retryBtn.hidden = !canManage || !failed;
  const reason = failed ? retryBlockReason(job) : '';
  retryBtn.disabled = Boolean(reason) || busyRetry;
  const next = Math.min((job.attempt ?? 1) + 1, job.max_attempts ?? 1);
  /** @type {HTMLElement} */ (retryBtn.querySelector('.btn-label')).textContent = busyRetry
    ? 'Retrying…'
    : reason
      ? 'Retry'
      : `Retry · Attempt ${next} of ${job.max_attempts ?? 1}`;
  reasonEl.hidden = !(canManage && failed && reason);
  reasonEl.textContent = reason;
  byId('readonly-note').hidden = canManage;
  /** @type {HTMLAnchorElement} */ (byId('edit-btn')).href = `/?from=${encodeURIComponent(job.id)}`;
}

function renderTimeline() {
  const entries = model.timeline();
  const ol = byId('timeline');
  const items = [];
  let attempt = 1;
  let prevTs = null;
  for (const e of entries) {
    if (e.state !== 'upcoming' && e.attempt > attempt && e.type !== 'retry') {
      attempt = e.attempt;
    }
    if (e.type === 'retry') {
      attempt = e.attempt;
      items.push(h('li', { className: 'tl-sep' }, [h('p', { className: 'tl-attempt', text: `Attempt ${e.attempt}` })]));
    }
    const gap = prevTs && e.ts ? secondsBetween(prevTs, e.ts) : null;
    if (e.ts) prevTs = e.ts;
    items.push(
      h('li', { dataset: { state: e.state, type: e.type } }, [
        h('span', { className: 'tl-dot', 'aria-hidden': 'true' }),
        h('span', { className: 'tl-label', text: e.state === 'current' && e.type === 'running' && model.job?.cancel_requested ? 'Running (cancelling)' : e.label }),
        e.ts
          ? h('time', { className: 'tl-time', datetime: e.ts, title: e.ts, text: clockTime(e.ts) })
          : h('span', { className: 'tl-time', text: e.state === 'upcoming' ? '' : '–' }),
        e.detail || (gap != null && gap >= 0)
          ? h('span', { className: 'tl-detail', text: [e.detail, gap != null && gap >= 0.05 ? `+${duration(gap)}` : ''].filter(Boolean).join(' · ') })
          : null,
      ]),
    );
  }
  ol.replaceChildren(...items);
}

/** @param {any} job */
function renderSettings(job) {
  const s = job.settings ?? {};
  byId('set-prompt').textContent = s.prompt ?? '';
  byId('set-negative-wrap').hidden = !s.negative_prompt;
  byId('set-negative').textContent = s.negative_prompt ?? '';
  const rows = [
    ['Size', s.width && s.height ? `${s.width} × ${s.height}` : ''],
    ['Steps', s.steps],
    ['Style', s.style],
    ['Seed', s.seed],
    ['Images', s.num_images],
    ['Provider', s.provider],
    ['Created', job.created_at ? new Date(job.created_at).toLocaleString() : ''],
  ];
  const dl = byId('settings-list');
  const nodes = [];
  for (const [k, v] of rows) {
    if (v === '' || v === null || v === undefined) continue;
    nodes.push(h('dt', { text: String(k) }), h('dd', { text: String(v) }));
  }
  if (job.parent_id) {
    nodes.push(h('dt', { text: 'Restarted from' }), h('dd', {}, [h('a', { href: `/jobs/${encodeURIComponent(job.parent_id)}`, text: job.parent_id })]));
  }
  dl.replaceChildren(...nodes);
}

function renderRaw() {
  const body = byId('raw-body');
  if (renderedRows > model.log.length) {
    body.replaceChildren();
    renderedRows = 0;
  }
  const frag = document.createDocumentFragment();
  for (const { event, receivedAt, transport } of model.log.slice(renderedRows)) {
    frag.append(
      h('tr', { dataset: { seq: String(event.seq), type: event.type } }, [
        h('td', { className: 'raw-seq', text: String(event.seq) }),
        h('td', { text: event.type }),
        h('td', { text: String(event.attempt ?? '') }),
        h('td', {}, [h('time', { datetime: event.ts, title: event.ts, text: clockTime(event.ts) })]),
        h('td', { title: new Date(receivedAt).toISOString(), text: clockTime(receivedAt) }),
        h('td', {}, [h('span', { className: 'via', text: transport })]),
        h('td', { className: 'raw-data', text: JSON.stringify(event.data ?? {}) }),
      ]),
    );
  }
  renderedRows = model.log.length;
  body.append(frag);
  byId('raw-count').textContent = String(model.log.length);
  const audit = model.audit();
  const first = model.log[0]?.event.seq;
  const problems = [];
  if (audit.missing.length) problems.push(`missing ${audit.missing.join(', ')}`);
  if (audit.repeated.length) problems.push(`repeated ${audit.repeated.join(', ')}`);
  const range = model.log.length ? `seq ${first}–${model.cursor}` : 'no events yet';
  const dup = conn.stats.duplicates ? ` · ${conn.stats.duplicates} duplicate${conn.stats.duplicates === 1 ? '' : 's'} dropped` : '';
  const gaps = conn.stats.gaps ? ` · ${conn.stats.gaps} gap${conn.stats.gaps === 1 ? '' : 's'} backfilled` : '';
  byId('raw-audit').textContent = `${range}${problems.length ? ` · ${problems.join(' · ')}` : model.log.length ? ' · in order, no gaps' : ''}${dup}${gaps}`;
}

// ---------------------------------------------------------------- title, favicon, background

/** @param {any} job */
function renderTitle(job) {
  if (flashTimer !== null) return;
  document.title = titleFor(job);
  drawFavicon(job);
}

/** @param {any} job */
function titleFor(job) {
  const prompt = snippet(job.settings?.prompt ?? '', 40);
  switch (job.status) {
    case 'queued':
      return `Queued${job.queue?.position != null ? ` #${job.queue.position}` : ''} · ${prompt} · Safelight`;
    case 'running':
      return `${percent(job.progress?.fraction ?? 0)}% · ${prompt} · Safelight`;
    case 'uploading':
      return `Saving · ${prompt} · Safelight`;
    case 'completed':
      return `✓ Done · ${prompt} · Safelight`;
    case 'failed':
      return `✕ Failed · ${prompt} · Safelight`;
    case 'cancelled':
      return `Cancelled · ${prompt} · Safelight`;
    default:
      return 'Generation · Safelight';
  }
}

/** @type {HTMLCanvasElement | null} */
let faviconCanvas = null;
let faviconKey = '';

/** A favicon with a progress ring and a status badge, so a background tab shows progress. */
/** @param {any} job */
function drawFavicon(job) {
  const pct = percent(job.progress?.fraction ?? 0);
  const key = `${job.status}:${pct}`;
  if (key === faviconKey) return;
  faviconKey = key;
  faviconCanvas = faviconCanvas ?? document.createElement('canvas');
  const c = faviconCanvas;
  c.width = c.height = 64;
  const ctx = c.getContext('2d');
  if (!ctx) return;
  ctx.clearRect(0, 0, 64, 64);
  ctx.fillStyle = '#1a1412';
  ctx.beginPath();
  ctx.roundRect?.(0, 0, 64, 64, 16);
  if (!ctx.roundRect) ctx.rect(0, 0, 64, 64);
  ctx.fill();
  const color = job.status === 'completed' ? '#2fbf71' : job.status === 'failed' ? '#ff5a4f' : job.status === 'cancelled' ? '#9a9088' : '#e8553d';
  ctx.lineWidth = 7;
  ctx.strokeStyle = 'rgba(255,255,255,0.15)';
  ctx.beginPath();
  ctx.arc(32, 32, 22, 0, Math.PI * 2);
  ctx.stroke();
  const frac = job.status === 'completed' || TERMINAL.has(job.status) ? 1 : (job.progress?.fraction ?? 0);
  ctx.strokeStyle = color;
  ctx.beginPath();
  ctx.arc(32, 32, 22, -Math.PI / 2, -Math.PI / 2 + Math.PI * 2 * Math.max(0.02, frac));
  ctx.stroke();
  ctx.fillStyle = color;
  ctx.beginPath();
  ctx.arc(32, 32, job.status === 'completed' || job.status === 'failed' ? 12 : 9, 0, Math.PI * 2);
  ctx.fill();
  /** @type {HTMLLinkElement} */ (byId('favicon')).href = c.toDataURL('image/png');
}

/** @param {any} job */
function onFinishedLive(job) {
  if (notifiedEnd || !sawLive) return;
  notifiedEnd = true;
  if (!document.hidden) return;
  // Background tab: flash the title until the user comes back, and notify if already allowed.
  const base = titleFor(job);
  const alt = job.status === 'completed' ? '● Your image is ready' : job.status === 'failed' ? '● Generation failed' : '● Generation ended';
  let on = false;
  flashTimer = setInterval(() => {
    on = !on;
    document.title = on ? alt : base;
  }, 1000);
  try {
    if ('Notification' in window && Notification.permission === 'granted') {
      const n = new Notification(job.status === 'completed' ? 'Safelight: your image is ready' : `Safelight: generation ${job.status}`, {
        body: snippet(job.settings?.prompt ?? '', 120),
        tag: `safelight-${job.id}`,
      });
      n.onclick = () => {
        window.focus();
        n.close();
      };
    }
  } catch {
    // notifications unavailable: the title flash is enough
  }
}

document.addEventListener('visibilitychange', () => {
  if (!document.hidden) {
    if (flashTimer !== null) {
      clearInterval(flashTimer);
      flashTimer = null;
      if (model.job) renderTitle(model.job);
    }
    manager.retryNow();
    // A viewer of a failed job: the owner may have retried meanwhile.
    if (model.job?.status === 'failed' && conn.mode === 'done') manager.resume();
  }
});
window.addEventListener('online', () => manager.retryNow());

// ---------------------------------------------------------------- announcements

/** @param {string} text */
function say(text) {
  if (!text || text === lastAnnounced) return;
  lastAnnounced = text;
  byId('live-status').textContent = text;
}

/** @param {any} job */
function announce(job) {
  const status = job.cancel_requested && !TERMINAL.has(job.status) ? 'cancelling' : job.status;
  if (status === 'running') {
    const pct = percent(job.progress?.fraction ?? 0);
    const milestone = Math.floor(pct / 25);
    if (milestone !== lastMilestone) {
      lastMilestone = milestone;
      say(pct > 0 ? `Running, ${pct} percent` : 'Running');
    }
    return;
  }
  const words = /** @type {Record<string, string>} */ ({
    queued: `Queued. ${queueText(job.queue ?? { position: null, eta_s: null })}`,
    uploading: 'Saving the images',
    completed: 'Completed. Your images are ready.',
    failed: `Failed: ${job.error?.message ?? ''}`,
    cancelled: 'Cancelled',
    cancelling: 'Cancelling',
  });
  say(words[status] ?? '');
}

// ---------------------------------------------------------------- connection badge

/** @param {ConnectionState} s */
function badge(s) {
  const now = Date.now();
  const secs = s.retryAt ? Math.max(0, Math.ceil((s.retryAt - now) / 1000)) : null;
  switch (s.mode) {
    case 'live':
      return { mode: s.transport, label: TRANSPORT_LABEL[s.transport] };
    case 'reconnecting':
      return { mode: 'reconnecting', label: secs != null ? `Reconnecting in ${secs} s` : 'Reconnecting…' };
    case 'offline':
      return { mode: 'offline', label: secs != null ? `Offline · retry in ${secs} s` : 'Offline' };
    case 'done':
      return { mode: 'done', label: 'Finished · closed' };
    case 'error':
      return { mode: 'error', label: 'Unavailable' };
    case 'stopped':
      return { mode: 'done', label: 'Stopped' };
    default:
      return { mode: 'connecting', label: `Connecting${s.forced ? ` (${TRANSPORT_LABEL[s.forced]})` : ''}…` };
  }
}

function renderBadge() {
  const s = conn;
  const b = badge(s);
  const el = byId('mode-badge');
  el.dataset.mode = b.mode;
  main.dataset.conn = s.mode;
  byId('mode-label').textContent = b.label;
  el.setAttribute('aria-label', `Connection: ${b.label}. Show connection details`);
  let reason = '';
  if (s.mode === 'live' && s.forced) reason = `${TRANSPORT_LABEL[s.forced]} chosen${params.get('transport') ? ' by the link' : ' by you'}`;
  else if (s.lastStepDown && (s.mode === 'live' || s.mode === 'connecting')) {
    const sd = s.lastStepDown;
    reason = sd.from && !/by you$/.test(sd.reason) ? `Stepped down from ${TRANSPORT_LABEL[sd.from]}: ${sd.reason}` : sd.reason;
  } else if ((s.mode === 'reconnecting' || s.mode === 'offline') && s.lastReason) reason = s.lastReason;
  if (s.mode === 'live' && s.lastStepDown === null && !s.forced) reason = '';
  byId('mode-reason').textContent = reason;

  byId('conn-mode').textContent = b.label;
  byId('conn-choice').textContent = s.forced ? `${TRANSPORT_LABEL[s.forced]} only` : 'Automatic (WebSocket → SSE → polling)';
  byId('conn-step').textContent = s.lastStepDown ? `${clockTime(s.lastStepDown.at)} · ${s.lastStepDown.reason}` : 'None';
  byId('conn-stats').textContent = `cursor ${s.cursor} · ${s.stats.duplicates} duplicates dropped · ${s.stats.gaps} gaps backfilled`;
  byId('conn-poll').hidden = s.forced === 'poll';
  byId('conn-auto').hidden = !s.forced;
  byId('conn-now').hidden = !(s.mode === 'reconnecting' || s.mode === 'offline');

  const banner = byId('net-banner');
  banner.hidden = s.mode !== 'offline';
  if (s.mode === 'offline') {
    const secs = s.retryAt ? Math.max(0, Math.ceil((s.retryAt - Date.now()) / 1000)) : null;
    byId('net-text').textContent = `Your job keeps running on the server. This page reconnects on its own${secs != null ? ` (next try in ${secs} s)` : ''} and picks up exactly where it left off.`;
  }
}

function tick() {
  renderBadge();
  const job = model.job;
  if (!job) return;
  const el = byId('updated-text');
  if (conn.mode === 'done' && job.finished_at) {
    el.textContent = `finished ${ago(Date.parse(job.finished_at), Date.now())}`;
  } else {
    const last = Math.max(conn.lastContactAt ?? 0, model.log.length ? model.log[model.log.length - 1].receivedAt : 0);
    el.textContent = last ? ago(last, Date.now()).replace('just now', 'just now') : '–';
  }
}

// ---------------------------------------------------------------- actions

/**
 * @param {string} text
 * @param {'ok' | 'bad' | ''} [tone]
 */
function actionStatus(text, tone = '') {
  const el = byId('action-status');
  el.className = `action-status ${tone}`;
  el.textContent = text;
}

/** @param {string} text */
function toast(text) {
  const region = byId('toast-region');
  const t = h('div', { className: 'toast', role: 'status', text });
  region.append(t);
  setTimeout(() => t.remove(), 2600);
}

async function onCancel() {
  if (!token || cancelling) return;
  cancelling = true;
  // Render now, not on the next batched render: the `cancelled` event can arrive within
  // the batching window and "Cancelling…" must be seen first.
  render();
  actionStatus('Asking the server to stop…');
  try {
    const res = await cancelJob(jobId, token);
    if (res.status === 200 || res.status === 202) {
      actionStatus(res.status === 200 && res.data?.status === 'cancelled' ? 'Cancelled.' : 'Stopping at the next step…');
      // The `cancelled` event arrives through the stream; show "Cancelling…" until then.
      if (model.job && !TERMINAL.has(model.job.status)) model.job.cancel_requested = true;
    } else if (res.status === 409) {
      cancelling = false;
      actionStatus(res.problem?.code === 'already_completed' ? 'Too late to cancel: it finished.' : problemText(res.problem, res.status), 'bad');
    } else if (res.status === 403) {
      cancelling = false;
      actionStatus('This browser is not allowed to cancel this job.', 'bad');
    } else {
      cancelling = false;
      actionStatus(problemText(res.problem, res.status), 'bad');
    }
  } catch (err) {
    cancelling = false;
    actionStatus(err instanceof NetworkError ? 'Network error: the cancel did not reach the server. Try again.' : String(err), 'bad');
  }
  scheduleRender();
}

async function onRetry() {
  const job = model.job;
  if (!token || !job || busyRetry || retryBlockReason(job)) return;
  busyRetry = true;
  clearRetryLater();
  scheduleRender();
  actionStatus('Asking for another attempt…');
  try {
    const res = await retryJob(jobId, token);
    busyRetry = false;
    if (res.status === 202 || res.status === 200) {
      actionStatus(`Attempt ${res.data?.attempt ?? ''} of ${res.data?.max_attempts ?? ''} is queued.`, 'ok');
      if (res.data) model.setSnapshot(res.data);
      notifiedEnd = false;
      sawLive = true;
      manager.resume();
    } else {
      const codes = /** @type {Record<string, string>} */ ({
        max_attempts_reached: 'All attempts have been used.',
        not_retryable: 'This error cannot be retried.',
        not_failed: 'The job is not failed any more.',
      });
      actionStatus(codes[res.problem?.code ?? ''] ?? problemText(res.problem, res.status), 'bad');
    }
  } catch (err) {
    busyRetry = false;
    actionStatus(err instanceof NetworkError ? 'Network error: the retry did not reach the server. Try again.' : String(err), 'bad');
  }
  scheduleRender();
}

function clearRetryLater() {
  if (retryLaterTimer !== null) clearInterval(retryLaterTimer);
  retryLaterTimer = null;
  retryLaterAt = 0;
}

function onRetryLater() {
  if (retryLaterAt) {
    clearRetryLater();
    actionStatus('Scheduled retry cancelled.');
    scheduleRender();
    return;
  }
  retryLaterAt = Date.now() + 30000;
  retryLaterTimer = setInterval(() => {
    const left = Math.ceil((retryLaterAt - Date.now()) / 1000);
    if (left <= 0) {
      clearRetryLater();
      onRetry();
    } else actionStatus(`Retrying in ${left} s…`);
  }, 1000);
  actionStatus('Retrying in 30 s…');
  scheduleRender();
}

async function onRestart() {
  const job = model.job;
  if (!job) return;
  const btn = /** @type {HTMLButtonElement} */ (byId('restart-btn'));
  if (btn.disabled) return;
  btn.disabled = true;
  btn.setAttribute('aria-busy', 'true');
  restartKey = restartKey ?? newIdempotencyKey();
  actionStatus('Creating a new job with the same settings…');
  const body = { ...settingsToBody(job), parent_id: job.id };
  try {
    const res = await createJob(body, restartKey);
    if (res.status === 201 || res.status === 200) {
      const created = res.data;
      if (created.manage_token) saveToken(created.id, created.manage_token);
      addRecent({ id: created.id, prompt: snippet(body.prompt, 120), created_at: created.created_at ?? new Date().toISOString(), status: created.status, mine: true });
      actionStatus(`Job created: ${created.id}. Opening it…`, 'ok');
      const qs = new URLSearchParams(location.search).toString();
      setTimeout(() => location.assign(`/jobs/${encodeURIComponent(created.id)}${qs ? `?${qs}` : ''}`), 500);
      return;
    }
    actionStatus(problemText(res.problem, res.status), 'bad');
  } catch (err) {
    actionStatus(err instanceof NetworkError ? 'Network error: could not create the new job. Try again.' : String(err), 'bad');
  }
  btn.disabled = false;
  btn.setAttribute('aria-busy', 'false');
}

async function onShare() {
  const url = `${location.origin}/jobs/${encodeURIComponent(jobId)}`;
  const how = await copyText(url);
  const fallback = byId('share-fallback');
  if (how === 'failed') {
    fallback.hidden = false;
    const input = /** @type {HTMLInputElement} */ (byId('share-url'));
    input.value = url;
    input.focus();
    input.select();
    actionStatus('Copying is blocked here: the link is selected, press Ctrl+C (or ⌘C) to copy it.');
  } else {
    fallback.hidden = true;
    actionStatus('Share link copied. Anyone with it can watch this job live.', 'ok');
    toast('Link copied');
  }
}

async function onCopyRaw() {
  const how = await copyText(JSON.stringify(model.exportLog(), null, 2));
  toast(how === 'failed' ? 'Copying is blocked here: use Download JSON' : `Copied ${model.log.length} events`);
}

function onDownloadRaw() {
  downloadText(`safelight-${jobId}-events.json`, JSON.stringify(model.exportLog(), null, 2));
}

/** @param {boolean} open */
function toggleConnPanel(open) {
  byId('conn-panel').hidden = !open;
  byId('mode-badge').setAttribute('aria-expanded', String(open));
}

byId('cancel-btn').addEventListener('click', onCancel);
byId('retry-btn').addEventListener('click', onRetry);
byId('restart-btn').addEventListener('click', onRestart);
byId('share-btn').addEventListener('click', onShare);
byId('raw-copy').addEventListener('click', onCopyRaw);
byId('raw-download').addEventListener('click', onDownloadRaw);
byId('net-retry').addEventListener('click', () => manager.retryNow());
byId('raw-hide-progress').addEventListener('change', (ev) => {
  byId('raw-details').parentElement?.classList.toggle('hide-progress', /** @type {HTMLInputElement} */ (ev.target).checked);
});
byId('mode-badge').addEventListener('click', () => toggleConnPanel(byId('conn-panel').hidden));
byId('conn-poll').addEventListener('click', () => {
  manager.switchTo('poll');
  toast('Switched to polling');
});
byId('conn-auto').addEventListener('click', () => manager.switchTo(null));
byId('conn-now').addEventListener('click', () => manager.retryNow());
document.addEventListener('keydown', (ev) => {
  if (ev.key === 'Escape' && !byId('conn-panel').hidden) {
    toggleConnPanel(false);
    byId('mode-badge').focus();
  }
});
document.addEventListener('click', (ev) => {
  const target = /** @type {HTMLElement} */ (ev.target);
  if (!byId('conn-panel').hidden && !target.closest('.conn')) toggleConnPanel(false);
  const stepBtn = target.closest('[data-step]');
  if (stepBtn instanceof HTMLButtonElement) {
    const step = stepBtn.dataset.step;
    if (step === 'retry') onRetry();
    else if (step === 'retry_later') onRetryLater();
    else if (step === 'restart') onRestart();
    else if (step === 'switch_to_polling') manager.switchTo('poll');
    else if (step === 'contact_support') {
      copyText(JSON.stringify({ job_id: jobId, error: model.job?.error }, null, 2)).then((how) =>
        toast(how === 'failed' ? 'Copying is blocked here' : 'Error details copied'),
      );
    }
  }
});

// ---------------------------------------------------------------- the stream

/** @param {number} status */
function showFatal(status) {
  fatal = true;
  main.dataset.status = 'missing';
  byId('job-id').textContent = jobId;
  byId('status-title').textContent = status === 404 ? 'Job not found' : 'This job cannot be shown';
  byId('status-sub').textContent = status === 404
    ? 'No job has this id. Check the link, or start a new generation.'
    : `The server answered ${status}.`;
  /** @type {HTMLElement} */ (document.querySelector('.job-grid')).hidden = true;
  /** @type {HTMLElement} */ (document.querySelector('.raw-card')).hidden = true;
  document.title = 'Job not found · Safelight';
}

manager.subscribe((m) => {
  if (m.type === 'state') {
    const before = conn.mode;
    conn = m.state;
    renderBadge();
    if (before !== conn.mode && (conn.mode === 'offline' || (conn.mode === 'live' && before !== 'live'))) {
      say(conn.mode === 'offline' ? 'Connection lost. Reconnecting automatically.' : `Live over ${TRANSPORT_LABEL[conn.transport]}`);
    }
    return;
  }
  if (m.type === 'snapshot') {
    if (m.reset) {
      renderedRows = Number.MAX_SAFE_INTEGER; // clears the table on the next render
    }
    model.setSnapshot(m.job, m.reset);
    if (!TERMINAL.has(m.job.status)) sawLive = true;
    if (canManage) addRecentIfMissing(m.job);
    scheduleRender();
    return;
  }
  if (m.type === 'event') {
    const wasTerminal = model.job ? TERMINAL.has(model.job.status) : true;
    model.apply(m.event, m.receivedAt, m.transport);
    if (m.event.type !== 'retry' && TERMINAL.has(m.event.type) && model.job && TERMINAL.has(model.job.status) && !wasTerminal) {
      cancelling = false;
      onFinishedLive(model.job);
    }
    scheduleRender();
    return;
  }
  if (m.type === 'fatal') showFatal(m.status);
});

/** @param {any} job */
function addRecentIfMissing(job) {
  if (listRecent().some((j) => j.id === job.id)) return;
  addRecent({ id: job.id, prompt: snippet(job.settings?.prompt ?? '', 120), created_at: job.created_at, status: job.status, mine: true });
}

window.addEventListener('pagehide', () => manager.stop());
window.addEventListener('pageshow', (ev) => {
  if (/** @type {PageTransitionEvent} */ (ev).persisted) manager.start();
});

byId('job-id').textContent = jobId;
setInterval(tick, 1000);
manager.start();

// For tests and curious people: the live objects, read-only by convention.
Object.defineProperty(window, 'safelight', { value: { manager, model }, configurable: true });
