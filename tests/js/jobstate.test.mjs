// The Progress page's view-model: snapshot + events -> job, timeline, raw log.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { JobModel } from '../../src/safelight/web/static/js/jobstate.js';
import { makeEvent as ev } from './fakes.mjs';

const snap = (over = {}) => ({
  id: 'job1', status: 'queued', attempt: 1, max_attempts: 3, last_seq: 0, cancel_requested: false,
  settings: { prompt: 'p', steps: 10, width: 64, height: 64 }, progress: null, queue: { position: 1, eta_s: null },
  preview: null, images: [], error: null, created_at: '2026-11-24T10:00:00.000Z', ...over,
});

describe('JobModel', () => {
  it('moves the job forward with events after the snapshot only', () => {
    const m = new JobModel();
    m.setSnapshot(snap({ status: 'running', last_seq: 3, progress: { step: 5, total_steps: 10, fraction: 0.5 } }));
    m.apply(ev(2, 'progress', { step: 1, total_steps: 10, fraction: 0.1 }), 1, 'ws');
    assert.equal(m.job.progress.step, 5, 'history does not roll the job back');
    m.apply(ev(4, 'progress', { step: 6, total_steps: 10, fraction: 0.6, eta_s: 2 }), 2, 'ws');
    assert.equal(m.job.progress.step, 6);
    m.apply(ev(5, 'uploading', { images_done: 0, images_total: 2 }), 3, 'ws');
    m.apply(ev(6, 'uploading', { images_done: 1, images_total: 2 }), 3, 'ws');
    m.apply(ev(7, 'completed', { images: [{ url: '/i/0' }], duration_s: 1.5 }), 4, 'ws');
    assert.equal(m.job.status, 'completed');
    assert.equal(m.job.images.length, 1);
    m.apply(ev(8, 'progress', { step: 9 }), 5, 'ws');
    assert.equal(m.job.status, 'completed', 'nothing after the end changes the job');
    assert.equal(m.job.progress.step, 6);
  });

  it('builds the timeline with attempts, one uploading row, and upcoming steps', () => {
    const m = new JobModel();
    m.setSnapshot(snap());
    m.apply(ev(1, 'queued', { position: 1 }), 1, 'ws');
    m.apply(ev(2, 'running', { worker: 'w1' }), 1, 'ws');
    m.apply(ev(3, 'failed', { error: { type: 'provider', code: 'x', retryable: true } }), 1, 'ws');
    assert.equal(m.job.status, 'failed');
    m.apply(ev(4, 'retry', { attempt: 2, max_attempts: 3 }, 2), 1, 'ws');
    assert.equal(m.job.status, 'queued');
    assert.equal(m.job.attempt, 2);
    m.apply(ev(5, 'queued', { position: 1 }, 2), 1, 'ws');
    m.apply(ev(6, 'running', {}, 2), 1, 'ws');
    m.apply(ev(7, 'uploading', { images_done: 0, images_total: 2 }, 2), 1, 'ws');
    m.apply(ev(8, 'uploading', { images_done: 1, images_total: 2 }, 2), 1, 'ws');
    const tl = m.timeline();
    assert.deepEqual(tl.map((e) => e.type), ['queued', 'running', 'failed', 'retry', 'queued', 'running', 'uploading', 'completed']);
    assert.equal(tl[2].state, 'bad');
    assert.equal(tl[6].state, 'current');
    assert.equal(tl[6].detail, '1 of 2 images stored');
    assert.equal(tl[7].state, 'upcoming');
    assert.equal(tl[3].attempt, 2);
  });

  it('audits the raw log and exports it as JSON', () => {
    const m = new JobModel();
    m.setSnapshot(snap());
    for (const s of [1, 2, 4, 4]) m.apply(ev(s), 1000, 'sse');
    assert.deepEqual(m.audit(), { missing: [3], repeated: [4] });
    const out = m.exportLog();
    assert.equal(out[0].transport, 'sse');
    assert.equal(out[0].received_at, new Date(1000).toISOString());
  });

  it('forgets everything on a reset snapshot and ignores stale snapshots', () => {
    const m = new JobModel();
    m.setSnapshot(snap({ last_seq: 5, status: 'running' }));
    m.apply(ev(6), 1, 'ws');
    m.setSnapshot(snap({ last_seq: 2, status: 'queued' }));
    assert.equal(m.job.status, 'running', 'an older snapshot is ignored');
    m.setSnapshot(snap({ last_seq: 2, status: 'queued' }), true);
    assert.equal(m.job.status, 'queued');
    assert.equal(m.log.length, 0);
  });
});
