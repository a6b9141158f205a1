// @ts-check
/**
 * What this browser remembers: the manage token of each job it created (keyed by job id)
 * and a short list of recent jobs.  localStorage may be unavailable (private modes); every
 * call degrades to "nothing remembered".
 */

const TOKEN_PREFIX = 'safelight:token:';
const RECENT_KEY = 'safelight:recent';
const RECENT_MAX = 12;

/**
 * @typedef {object} RecentJob
 * @property {string} id
 * @property {string} prompt
 * @property {string} created_at
 * @property {string} [status]
 * @property {boolean} [mine]  created in this browser
 */

function storage() {
  try {
    return window.localStorage;
  } catch {
    return null;
  }
}

/**
 * @param {string} jobId
 * @param {string} token
 */
export function saveToken(jobId, token) {
  try {
    storage()?.setItem(TOKEN_PREFIX + jobId, token);
  } catch {
    // quota or disabled storage: the job still works, it just cannot be managed later
  }
}

/** @param {string} jobId */
export function getToken(jobId) {
  try {
    return storage()?.getItem(TOKEN_PREFIX + jobId) ?? null;
  } catch {
    return null;
  }
}

/** @returns {RecentJob[]} */
export function listRecent() {
  try {
    const raw = storage()?.getItem(RECENT_KEY);
    const list = raw ? JSON.parse(raw) : [];
    return Array.isArray(list) ? list.filter((j) => j && typeof j.id === 'string') : [];
  } catch {
    return [];
  }
}

/** @param {RecentJob[]} list */
function writeRecent(list) {
  try {
    storage()?.setItem(RECENT_KEY, JSON.stringify(list.slice(0, RECENT_MAX)));
  } catch {
    // ignore
  }
}

/** @param {RecentJob} job */
export function addRecent(job) {
  const list = listRecent().filter((j) => j.id !== job.id);
  list.unshift(job);
  writeRecent(list);
}

/**
 * Update the remembered status of a job already in the list (viewed jobs are not added).
 * @param {string} id
 * @param {Partial<RecentJob>} patch
 */
export function updateRecent(id, patch) {
  const list = listRecent();
  const item = list.find((j) => j.id === id);
  if (!item) return;
  Object.assign(item, patch);
  writeRecent(list);
}
