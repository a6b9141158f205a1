// @ts-check
/**
 * Home: the generation form.  One job per press (an Idempotency-Key per submission, reused
 * only when the same body is sent again), 422 errors next to their fields, network errors
 * that keep what was typed, `/?from={id}` prefill, and this browser's recent jobs.
 */
import { NetworkError, createJob, getJob, getOptions, newIdempotencyKey, problemText } from './api.js';
import { byId, h } from './dom.js';
import { ago, snippet } from './format.js';
import { addRecent, listRecent, saveToken } from './store.js';

/**
 * @typedef {object} Limits
 * @property {number} prompt_max
 * @property {number} negative_prompt_max
 * @property {{min: number, max: number, multiple_of: number}} width
 * @property {{min: number, max: number, multiple_of: number}} height
 * @property {{min: number, max: number}} steps
 * @property {{min: number, max: number}} num_images
 * @property {number} seed_max
 *
 * @typedef {object} Provider
 * @property {string} name
 * @property {string} title
 * @property {string[]} styles
 * @property {string} default_style
 * @property {Record<string, string>} style_descriptions
 *
 * @typedef {object} Options
 * @property {Provider[]} providers
 * @property {string} default_provider
 * @property {{label: string, width: number, height: number}[]} size_presets
 * @property {Limits} limits
 * @property {{width: number, height: number, steps: number, num_images: number}} defaults
 * @property {string[]} transports
 * @property {number} max_attempts
 */

/** Used until /api/options answers (and if it never does), so the form is usable at once. */
/** @type {Options} */
const FALLBACK_OPTIONS = {
  providers: [{ name: 'builtin', title: 'Built-in', styles: [], default_style: '', style_descriptions: {} }],
  default_provider: 'builtin',
  size_presets: [
    { label: 'Square', width: 512, height: 512 },
    { label: 'Portrait', width: 512, height: 768 },
    { label: 'Landscape', width: 768, height: 512 },
  ],
  limits: {
    prompt_max: 2000,
    negative_prompt_max: 2000,
    width: { min: 64, max: 2048, multiple_of: 8 },
    height: { min: 64, max: 2048, multiple_of: 8 },
    steps: { min: 1, max: 150 },
    num_images: { min: 1, max: 4 },
    seed_max: 4294967295,
  },
  defaults: { width: 512, height: 512, steps: 30, num_images: 1 },
  transports: ['ws', 'sse', 'poll'],
  max_attempts: 3,
};

const FIELDS = ['prompt', 'negative_prompt', 'width', 'height', 'steps', 'style', 'seed', 'num_images', 'provider'];
const DRAFT_KEY = 'safelight:draft';

const form = /** @type {HTMLFormElement} */ (byId('generate-form'));
const promptEl = /** @type {HTMLTextAreaElement} */ (byId('prompt'));
const negativeEl = /** @type {HTMLTextAreaElement} */ (byId('negative_prompt'));
const widthEl = /** @type {HTMLInputElement} */ (byId('width'));
const heightEl = /** @type {HTMLInputElement} */ (byId('height'));
const stepsEl = /** @type {HTMLInputElement} */ (byId('steps'));
const stepsRange = /** @type {HTMLInputElement} */ (byId('steps-range'));
const styleEl = /** @type {HTMLSelectElement} */ (byId('style'));
const providerEl = /** @type {HTMLSelectElement} */ (byId('provider'));
const seedEl = /** @type {HTMLInputElement} */ (byId('seed'));
const seedRandom = /** @type {HTMLInputElement} */ (byId('seed-random'));
const seedFixed = /** @type {HTMLInputElement} */ (byId('seed-fixed'));
const submitBtn = /** @type {HTMLButtonElement} */ (byId('generate'));
const submitStatus = byId('submit-status');
const formError = byId('form-error');

let options = FALLBACK_OPTIONS;
/** @type {string | null} */
let parentId = null;
let submitting = false;
/** The Idempotency-Key of the current submission, and the body it was used with. */
let idem = { key: '', body: '' };

// ---------------------------------------------------------------- options and fields

/** @param {Options} opts */
function applyOptions(opts) {
  options = opts;
  const L = opts.limits;
  promptEl.dataset.max = String(L.prompt_max);
  negativeEl.dataset.max = String(L.negative_prompt_max);
  for (const [el, lim] of /** @type {const} */ ([[widthEl, L.width], [heightEl, L.height]])) {
    el.min = String(lim.min);
    el.max = String(lim.max);
    el.step = String(lim.multiple_of);
  }
  for (const el of [stepsEl, stepsRange]) {
    el.min = String(L.steps.min);
    el.max = String(L.steps.max);
  }
  seedEl.max = String(L.seed_max);
  byId('size-hint').textContent =
    `${L.width.min} to ${L.width.max} pixels, in multiples of ${L.width.multiple_of}.`;

  renderSizes();
  renderNumImages();
  providerEl.replaceChildren(
    ...opts.providers.map((p) => h('option', { value: p.name, text: p.title || p.name })),
  );
  providerEl.value = opts.default_provider;
  byId('provider-field').hidden = opts.providers.length < 2;
  renderStyles();
  updateCounters();
}

function currentProvider() {
  return options.providers.find((p) => p.name === providerEl.value) ?? options.providers[0];
}

function renderStyles() {
  const p = currentProvider();
  const keep = styleEl.value;
  styleEl.replaceChildren(
    ...p.styles.map((s) => h('option', { value: s, text: titleCase(s) })),
  );
  styleEl.value = p.styles.includes(keep) ? keep : p.default_style;
  styleEl.disabled = p.styles.length === 0;
  describeStyle();
}

function describeStyle() {
  const p = currentProvider();
  byId('style-desc').textContent = p.style_descriptions?.[styleEl.value] ?? '';
}

function renderSizes() {
  const box = byId('size-options');
  const d = options.defaults;
  const chips = options.size_presets.map((p, i) =>
    h('div', { className: 'chip-radio' }, [
      h('input', {
        type: 'radio',
        name: 'size',
        id: `size-${i}`,
        value: `${p.width}x${p.height}`,
        checked: p.width === d.width && p.height === d.height,
      }),
      h('label', { for: `size-${i}` }, [p.label, h('small', { text: `${p.width} × ${p.height}` })]),
    ]),
  );
  chips.push(
    h('div', { className: 'chip-radio' }, [
      h('input', { type: 'radio', name: 'size', id: 'size-custom', value: 'custom' }),
      h('label', { for: 'size-custom' }, ['Custom', h('small', { text: 'any size' })]),
    ]),
  );
  box.replaceChildren(...chips);
  if (!box.querySelector('input:checked')) /** @type {HTMLInputElement} */ (box.querySelector('input')).checked = true;
  syncSize();
}

function renderNumImages() {
  const box = byId('num-options');
  const { min, max } = options.limits.num_images;
  const items = [];
  for (let n = min; n <= max; n++) {
    items.push(
      h('input', { type: 'radio', name: 'num_images', id: `num-${n}`, value: String(n), checked: n === options.defaults.num_images }),
      h('label', { for: `num-${n}`, text: String(n) }),
    );
  }
  box.replaceChildren(...items);
}

/** Show the custom inputs for "Custom"; mirror a preset into them otherwise. */
function syncSize() {
  const checked = /** @type {HTMLInputElement | null} */ (form.querySelector('input[name="size"]:checked'));
  const custom = !checked || checked.value === 'custom';
  byId('custom-size').hidden = !custom;
  if (!custom && checked) {
    const [w, hgt] = checked.value.split('x');
    widthEl.value = w;
    heightEl.value = hgt;
  }
}

/**
 * Select the preset matching a size, or Custom.
 * @param {number} w
 * @param {number} hgt
 */
function selectSize(w, hgt) {
  const match = /** @type {HTMLInputElement | null} */ (form.querySelector(`input[name="size"][value="${w}x${hgt}"]`));
  const target = match ?? /** @type {HTMLInputElement} */ (byId('size-custom'));
  target.checked = true;
  widthEl.value = String(w);
  heightEl.value = String(hgt);
  syncSize();
}

function syncSeed() {
  seedEl.disabled = !seedFixed.checked;
  seedEl.placeholder = seedFixed.checked ? 'Enter a seed' : 'Random';
}

function updateCounters() {
  for (const [el, id] of /** @type {const} */ ([[promptEl, 'prompt-count'], [negativeEl, 'negative-count']])) {
    const max = Number(el.dataset.max || 2000);
    const len = el.value.trim().length;
    const out = byId(id);
    out.textContent = `${len} / ${max}`;
    out.classList.toggle('over', len > max);
  }
}

/** @param {string} s */
function titleCase(s) {
  return s.replace(/[_-]+/g, ' ').replace(/\b\w/g, (c) => c.toUpperCase());
}

// ---------------------------------------------------------------- the body

/** @param {string} raw */
function intOrRaw(raw) {
  const t = raw.trim();
  return /^-?\d+$/.test(t) ? Number(t) : t;
}

function collect() {
  const num = /** @type {HTMLInputElement | null} */ (form.querySelector('input[name="num_images"]:checked'));
  /** @type {Record<string, any>} */
  const body = {
    prompt: promptEl.value,
    negative_prompt: negativeEl.value,
    width: intOrRaw(widthEl.value),
    height: intOrRaw(heightEl.value),
    steps: intOrRaw(stepsEl.value),
    num_images: num ? Number(num.value) : options.defaults.num_images,
    seed: seedFixed.checked ? intOrRaw(seedEl.value) : null,
  };
  if (styleEl.value) body.style = styleEl.value;
  if (options.providers.length > 1 || providerEl.value !== options.default_provider) body.provider = providerEl.value;
  if (parentId) body.parent_id = parentId;
  return body;
}

// ---------------------------------------------------------------- errors

function clearErrors() {
  formError.hidden = true;
  formError.replaceChildren();
  for (const f of FIELDS) {
    const msg = document.getElementById(`${f}-error`);
    if (msg) {
      msg.hidden = true;
      msg.textContent = '';
    }
    for (const el of fieldInputs(f)) el.removeAttribute('aria-invalid');
  }
}

/**
 * The focusable inputs of a field.
 * @param {string} field
 * @returns {HTMLElement[]}
 */
function fieldInputs(field) {
  if (field === 'num_images') return [...form.querySelectorAll('input[name="num_images"]')].map((e) => /** @type {HTMLElement} */ (e));
  const el = document.getElementById(field);
  return el ? [el] : [];
}

/**
 * Put each 422 error next to its field; the rest in the summary.
 * @param {{field: string, message: string}[]} errors
 * @param {string} summary
 */
function showFieldErrors(errors, summary) {
  /** @type {HTMLElement | null} */
  let first = null;
  const orphans = [];
  for (const e of errors) {
    const field = String(e.field || '').replace(/^body\./, '');
    const msg = document.getElementById(`${field}-error`);
    if (!msg) {
      orphans.push(`${field ? `${field}: ` : ''}${e.message}`);
      continue;
    }
    msg.textContent = msg.hidden ? e.message : `${msg.textContent} ${e.message}`;
    msg.hidden = false;
    if (field === 'width' || field === 'height') {
      /** @type {HTMLInputElement} */ (byId('size-custom')).checked = true;
      syncSize();
    }
    if (field === 'seed') {
      seedFixed.checked = true;
      syncSeed();
    }
    for (const el of fieldInputs(field)) el.setAttribute('aria-invalid', 'true');
    first = first ?? fieldInputs(field)[0] ?? null;
  }
  const count = errors.length;
  showFormError(
    summary || `Please fix ${count === 1 ? 'the highlighted field' : `the ${count} highlighted fields`}.`,
    orphans,
  );
  if (first) first.focus();
}

/**
 * @param {string} text
 * @param {string[]} [more]
 */
function showFormError(text, more = []) {
  formError.replaceChildren(
    h('div', {}, [h('p', {}, [h('strong', { text })]), ...more.map((m) => h('p', { className: 'small', text: m }))]),
  );
  formError.hidden = false;
}

// ---------------------------------------------------------------- submit

/** @param {boolean} busy */
function setBusy(busy) {
  submitting = busy;
  submitBtn.disabled = busy;
  submitBtn.setAttribute('aria-busy', String(busy));
  /** @type {HTMLElement} */ (submitBtn.querySelector('.btn-label')).textContent = busy ? 'Creating…' : 'Generate';
}

/** @param {SubmitEvent | Event} ev */
async function onSubmit(ev) {
  ev.preventDefault();
  if (submitting) return; // a double click makes one request (and the key makes one job)
  setBusy(true);
  clearErrors();
  submitStatus.className = 'submit-status';
  submitStatus.textContent = 'Creating your job…';
  const body = collect();
  const bodyText = JSON.stringify(body);
  if (idem.body !== bodyText) idem = { key: newIdempotencyKey(), body: bodyText };
  try {
    let res = await createJob(body, idem.key);
    // 409: the same key is still being processed (a retry raced the first request).
    for (let i = 0; i < 5 && res.status === 409; i++) {
      await new Promise((r) => setTimeout(r, 400));
      res = await createJob(body, idem.key);
    }
    if (res.status === 201 || res.status === 200) {
      onCreated(res.data, body);
      return;
    }
    setBusy(false);
    submitStatus.textContent = '';
    if (res.status === 422) {
      const errors = res.problem?.errors ?? [];
      if (errors.length) showFieldErrors(errors, '');
      else showFormError(problemText(res.problem, res.status));
      return;
    }
    if (res.status === 429 || res.status === 503) {
      const wait = res.retryAfterS ? ` Try again in ${res.retryAfterS} s.` : ' Try again shortly.';
      showFormError(`${problemText(res.problem, res.status)}${wait}`, ['Your prompt and settings are kept.']);
      return;
    }
    showFormError(problemText(res.problem, res.status), ['Your prompt and settings are kept.']);
  } catch (err) {
    setBusy(false);
    submitStatus.textContent = '';
    if (err instanceof NetworkError) {
      showFormError('Network error: Safelight could not be reached.', [
        'Nothing was lost: your prompt and settings are still here. Check your connection and press Generate again; a job is never created twice.',
      ]);
      formError.focus();
      return;
    }
    showFormError('Something went wrong in this page.', [String(err)]);
  }
}

/**
 * @param {any} job
 * @param {Record<string, any>} body
 */
function onCreated(job, body) {
  if (job.manage_token) saveToken(job.id, job.manage_token);
  addRecent({ id: job.id, prompt: snippet(body.prompt, 120), created_at: job.created_at ?? new Date().toISOString(), status: job.status, mine: true });
  try {
    sessionStorage.removeItem(DRAFT_KEY);
  } catch {
    // ignore
  }
  submitBtn.setAttribute('aria-busy', 'false');
  /** @type {HTMLElement} */ (submitBtn.querySelector('.btn-label')).textContent = 'Created';
  submitStatus.className = 'submit-status ok';
  submitStatus.replaceChildren('Job created ', h('code', { id: 'created-id', text: job.id }), ' · opening its page…');
  const params = new URLSearchParams(location.search);
  params.delete('from');
  const qs = params.toString();
  setTimeout(() => location.assign(`/jobs/${encodeURIComponent(job.id)}${qs ? `?${qs}` : ''}`), 900);
}

// ---------------------------------------------------------------- prefill and drafts

/** @param {Record<string, any>} s */
function fillForm(s) {
  promptEl.value = s.prompt ?? '';
  negativeEl.value = s.negative_prompt ?? '';
  if (s.provider && [...providerEl.options].some((o) => o.value === s.provider)) {
    providerEl.value = s.provider;
    renderStyles();
  }
  if (typeof s.width === 'number' && typeof s.height === 'number') selectSize(s.width, s.height);
  if (s.steps !== undefined) {
    stepsEl.value = String(s.steps);
    stepsRange.value = String(s.steps);
    byId('steps-out').textContent = String(s.steps);
  }
  if (s.style && [...styleEl.options].some((o) => o.value === s.style)) styleEl.value = s.style;
  describeStyle();
  if (s.seed === null || s.seed === undefined || s.seed === '') {
    seedRandom.checked = true;
    seedEl.value = '';
  } else {
    seedFixed.checked = true;
    seedEl.value = String(s.seed);
  }
  syncSeed();
  const num = /** @type {HTMLInputElement | null} */ (form.querySelector(`input[name="num_images"][value="${s.num_images}"]`));
  if (num) num.checked = true;
  updateCounters();
}

/** @param {string} id */
async function prefillFrom(id) {
  const banner = byId('from-banner');
  banner.hidden = false;
  byId('from-text').textContent = 'Loading its settings…';
  try {
    const res = await getJob(id);
    if (!res.ok) {
      byId('from-text').textContent = res.status === 404 ? 'That job no longer exists.' : problemText(res.problem, res.status);
      return;
    }
    parentId = res.data.id;
    fillForm(res.data.settings ?? {});
    const link = h('a', { href: `/jobs/${encodeURIComponent(res.data.id)}`, text: snippet(res.data.settings?.prompt ?? res.data.id, 60) });
    byId('from-text').replaceChildren('Settings copied from “', link, '”.');
    promptEl.focus();
    promptEl.setSelectionRange(promptEl.value.length, promptEl.value.length);
  } catch {
    byId('from-text').textContent = 'Could not load that job: Safelight cannot be reached.';
  }
}

function saveDraft() {
  try {
    const body = collect();
    delete body.parent_id;
    sessionStorage.setItem(DRAFT_KEY, JSON.stringify(body));
  } catch {
    // ignore
  }
}

function restoreDraft() {
  try {
    const raw = sessionStorage.getItem(DRAFT_KEY);
    if (raw) fillForm(JSON.parse(raw));
  } catch {
    // ignore
  }
}

// ---------------------------------------------------------------- recent jobs

function renderRecent() {
  const list = listRecent();
  const ul = byId('recent-list');
  byId('recent-empty').hidden = list.length > 0;
  const now = Date.now();
  ul.replaceChildren(
    ...list.slice(0, 8).map((j) =>
      h('li', {}, [
        h('a', { href: `/jobs/${encodeURIComponent(j.id)}` }, [
          h('span', { className: 'recent-prompt', text: j.prompt || '(no prompt)' }),
          h('span', { className: 'status-dot', dataset: { status: j.status ?? '' }, title: j.status ?? '' }),
          h('span', { className: 'recent-meta', text: [j.status, j.created_at ? ago(Date.parse(j.created_at), now) : ''].filter(Boolean).join(' · ') }),
        ]),
      ]),
    ),
  );
}

// ---------------------------------------------------------------- wiring

form.addEventListener('submit', onSubmit);
form.addEventListener('input', (ev) => {
  const t = /** @type {HTMLElement} */ (ev.target);
  if (t === stepsRange) {
    stepsEl.value = stepsRange.value;
  } else if (t === stepsEl) {
    stepsRange.value = stepsEl.value;
  }
  if (t === stepsEl || t === stepsRange) byId('steps-out').textContent = stepsEl.value;
  if (t === promptEl || t === negativeEl) updateCounters();
  if (t.getAttribute('aria-invalid') === 'true') {
    t.removeAttribute('aria-invalid');
    const msg = document.getElementById(`${t.id}-error`);
    if (msg) msg.hidden = true;
  }
  saveDraft();
});
form.addEventListener('change', (ev) => {
  const t = /** @type {HTMLInputElement} */ (ev.target);
  if (t.name === 'size') syncSize();
  if (t.name === 'seed_mode') {
    syncSeed();
    if (seedFixed.checked) seedEl.focus();
  }
  if (t === providerEl) renderStyles();
  if (t === styleEl) describeStyle();
  saveDraft();
});
promptEl.addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
    ev.preventDefault();
    form.requestSubmit();
  }
});
byId('seed-dice').addEventListener('click', () => {
  const buf = new Uint32Array(1);
  crypto.getRandomValues(buf);
  seedFixed.checked = true;
  seedEl.value = String(buf[0] % (options.limits.seed_max + 1));
  syncSeed();
  saveDraft();
});
byId('from-clear').addEventListener('click', () => {
  parentId = null;
  byId('from-banner').hidden = true;
  history.replaceState(null, '', '/');
  promptEl.focus();
});
window.addEventListener('pageshow', (ev) => {
  // Back from the job page (bfcache): the button must be usable again.
  if (/** @type {PageTransitionEvent} */ (ev).persisted) {
    setBusy(false);
    submitStatus.textContent = '';
    renderRecent();
  }
});

async function init() {
  applyOptions(FALLBACK_OPTIONS);
  stepsEl.value = stepsRange.value = String(FALLBACK_OPTIONS.defaults.steps);
  syncSeed();
  renderRecent();
  const from = new URLSearchParams(location.search).get('from');
  try {
    const res = await getOptions();
    if (res.ok) {
      const before = collect();
      applyOptions(res.data);
      stepsEl.value = stepsRange.value = String(res.data.defaults.steps);
      byId('steps-out').textContent = stepsEl.value;
      if (before.prompt) fillForm(before);
    } else {
      showFormError(`Could not load the form options (${res.status}). Defaults are shown.`);
    }
  } catch {
    showFormError('Network error: Safelight could not be reached. The form uses defaults until it is back.');
  }
  if (from) await prefillFrom(from);
  else restoreDraft();
  form.dataset.ready = 'true';
}

init();
