// @ts-check
/**
 * The JSON API of API.md, for the pages.  Every call resolves to an ApiResult; only a
 * request that never reached the server rejects (with NetworkError).
 */

export class NetworkError extends Error {
  constructor(message = 'Safelight cannot be reached') {
    super(message);
    this.name = 'NetworkError';
  }
}

/**
 * @typedef {object} FieldError
 * @property {string} field
 * @property {string} message
 *
 * @typedef {object} Problem  RFC 9457 problem+json
 * @property {string} [type]
 * @property {string} [title]
 * @property {number} [status]
 * @property {string} [detail]
 * @property {string} [code]
 * @property {FieldError[]} [errors]
 *
 * @typedef {object} ApiResult
 * @property {boolean} ok
 * @property {number} status
 * @property {any} data        the JSON body when ok
 * @property {Problem | null} problem  the problem body when not ok
 * @property {number | null} retryAfterS
 */

/**
 * @param {string} path
 * @param {{method?: string, body?: any, token?: string | null, idempotencyKey?: string}} [opts]
 * @returns {Promise<ApiResult>}
 */
export async function request(path, opts = {}) {
  /** @type {Record<string, string>} */
  const headers = { Accept: 'application/json' };
  if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
  if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
  if (opts.idempotencyKey) headers['Idempotency-Key'] = opts.idempotencyKey;
  let res;
  try {
    res = await fetch(path, {
      method: opts.method ?? 'GET',
      headers,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      cache: 'no-store',
      credentials: 'same-origin',
    });
  } catch {
    throw new NetworkError();
  }
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  const ra = Number(res.headers.get('Retry-After'));
  return {
    ok: res.ok,
    status: res.status,
    data: res.ok ? body : null,
    problem: res.ok ? null : (body ?? { title: res.statusText, status: res.status }),
    retryAfterS: Number.isFinite(ra) && ra > 0 ? ra : null,
  };
}

/** @param {string} id */
export const jobPath = (id) => `/api/jobs/${encodeURIComponent(id)}`;

export const getOptions = () => request('/api/options');

/** @param {string} id */
export const getJob = (id) => request(jobPath(id));

/**
 * @param {Record<string, any>} body
 * @param {string} idempotencyKey
 */
export const createJob = (body, idempotencyKey) =>
  request('/api/jobs', { method: 'POST', body, idempotencyKey });

/**
 * @param {string} id
 * @param {string} token
 */
export const cancelJob = (id, token) => request(`${jobPath(id)}/cancel`, { method: 'POST', token });

/**
 * @param {string} id
 * @param {string} token
 */
export const retryJob = (id, token) => request(`${jobPath(id)}/retry`, { method: 'POST', token });

/** A fresh Idempotency-Key (works on insecure origins too, unlike randomUUID). */
export function newIdempotencyKey() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * The settings of a job as a create body (for restart and the `?from=` prefill).
 * @param {any} job
 * @returns {Record<string, any>}
 */
export function settingsToBody(job) {
  const s = job.settings ?? {};
  return {
    prompt: s.prompt ?? '',
    negative_prompt: s.negative_prompt ?? '',
    width: s.width,
    height: s.height,
    steps: s.steps,
    style: s.style,
    seed: s.seed ?? null,
    num_images: s.num_images,
    provider: s.provider ?? null,
  };
}

/**
 * One sentence from a problem body.
 * @param {Problem | null} problem
 * @param {number} status
 */
export function problemText(problem, status) {
  if (problem?.detail) return problem.detail;
  if (problem?.title) return problem.title;
  return `The server answered ${status}.`;
}
