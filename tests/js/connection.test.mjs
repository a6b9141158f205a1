// Decisions of the connection manager (DESIGN.md "The browser's connection ladder"), driven
// by fake transports and a fake clock.  Run: node --test tests/js/
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  ConnectionManager,
  DEFAULT_SETTINGS,
  backoffDelay,
  parseTransport,
  settingsFromQuery,
} from '../../src/safelight/web/static/js/connection.js';
import { FakeClock, FakeServer, flush, makeDeps, makeEvent as ev } from './fakes.mjs';

function setup({ status = 'running', events = [], settings = {}, forced = null, random } = {}) {
  const clock = new FakeClock();
  const server = new FakeServer(clock, { status, events });
  const { deps, sockets, sources } = makeDeps({ server, clock, random });
  const manager = new ConnectionManager({
    jobId: 'job1',
    baseUrl: 'http://test.local',
    deps,
    settings,
    forced,
  });
  const log = [];
  manager.subscribe((m) => log.push(m));
  const applied = () => log.filter((m) => m.type === 'event').map((m) => m.event.seq);
  const appliedVia = () => log.filter((m) => m.type === 'event').map((m) => m.transport);
  const lastWs = () => sockets[sockets.length - 1];
  const lastEs = () => sources[sources.length - 1];
  return { clock, server, manager, log, sockets, sources, applied, appliedVia, lastWs, lastEs };
}

/** Start and bring a WebSocket up with `welcome`. */
async function liveOnWs(t) {
  t.manager.start();
  await t.clock.advance(0);
  assert.equal(t.sockets.length, 1);
  t.lastWs().send({ type: 'welcome', transport: 'ws', last_seq: t.server.lastSeq, status: t.server.status });
  await t.clock.advance(0);
  assert.equal(t.manager.state.mode, 'live');
  assert.equal(t.manager.state.transport, 'ws');
}

describe('backoff', () => {
  it('is full jitter between 0 and min(cap, base * 2^n)', () => {
    for (let n = 0; n < 12; n++) {
      const ceiling = Math.min(10000, 500 * 2 ** n);
      assert.equal(backoffDelay(n, 500, 10000, () => 0), 0);
      const top = backoffDelay(n, 500, 10000, () => 0.999999);
      assert.ok(top < ceiling && top >= ceiling - 1, `n=${n} top=${top} ceiling=${ceiling}`);
    }
    assert.equal(backoffDelay(30, 500, 10000, () => 0.5), 5000);
  });

  it('spreads delays (full jitter, not equal jitter)', () => {
    let i = 0;
    const values = [0.01, 0.3, 0.6, 0.95];
    const delays = values.map(() => backoffDelay(3, 500, 10000, () => values[i++]));
    assert.deepEqual(delays, [40, 1200, 2400, 3800]);
  });

  it('has the defaults of DESIGN.md', () => {
    assert.equal(DEFAULT_SETTINGS.wsProofMs, 3000);
    assert.equal(DEFAULT_SETTINGS.sseProofMs, 4000);
    assert.equal(DEFAULT_SETTINGS.backoffBaseMs, 500);
    assert.equal(DEFAULT_SETTINGS.backoffCapMs, 10000);
    assert.equal(DEFAULT_SETTINGS.watchdogMs, 35000);
  });
});

describe('snapshot first', () => {
  it('reads the job before opening any transport, then opens WebSocket with the cursor', async () => {
    const t = setup({ events: [ev(1, 'queued'), ev(2, 'running')] });
    t.manager.start();
    assert.equal(t.sockets.length, 0);
    assert.deepEqual(t.server.requests, ['/api/jobs/job1']);
    await t.clock.advance(0);
    const first = t.log.find((m) => m.type === 'snapshot');
    assert.equal(first.job.last_seq, 2);
    assert.equal(t.sockets.length, 1);
    assert.equal(t.lastWs().url, 'ws://test.local/api/jobs/job1/ws?after=0');
    assert.equal(t.manager.state.mode, 'connecting');
  });

  it('goes offline when the server cannot be reached and recovers on its own', async () => {
    const t = setup();
    t.server.down = true;
    t.manager.start();
    await t.clock.advance(0);
    assert.equal(t.manager.state.mode, 'offline');
    assert.ok(t.manager.state.retryAt !== null);
    t.server.down = false;
    await t.clock.advance(10000);
    assert.equal(t.sockets.length, 1);
  });

  it('reports a missing job as fatal and opens nothing', async () => {
    const t = setup();
    t.manager.jobId = 'nope';
    t.manager.start();
    await t.clock.advance(0);
    assert.equal(t.manager.state.mode, 'error');
    assert.equal(t.log.find((m) => m.type === 'fatal').status, 404);
    assert.equal(t.sockets.length, 0);
  });
});

describe('events by seq', () => {
  it('applies in order and drops duplicates', async () => {
    const t = setup();
    await liveOnWs(t);
    const ws = t.lastWs();
    for (const seq of [1, 2, 2, 1, 3]) ws.send(ev(seq));
    await flush();
    assert.deepEqual(t.applied(), [1, 2, 3]);
    assert.equal(t.manager.state.stats.duplicates, 2);
    assert.equal(t.manager.state.cursor, 3);
  });

  it('backfills a gap with a poll and applies each event once', async () => {
    const t = setup({ events: [ev(1), ev(2), ev(3), ev(4)] });
    await liveOnWs(t);
    const ws = t.lastWs();
    ws.send(ev(1));
    ws.send(ev(4)); // 2 and 3 were lost
    await t.clock.advance(0);
    assert.ok(t.server.polls.includes('/api/jobs/job1/events?after=1&wait=0'));
    t.server.push(ev(5));
    ws.send(ev(5));
    ws.send(ev(3)); // late duplicate
    await t.clock.advance(0);
    assert.deepEqual(t.applied(), [1, 2, 3, 4, 5]);
    assert.equal(t.manager.state.stats.gaps, 1);
    const via = t.appliedVia();
    assert.equal(via[1], 'poll (backfill)');
    assert.equal(via[4], 'ws');
  });

  it('backfills when a ping reports a later last_seq', async () => {
    const t = setup({ events: [ev(1), ev(2)] });
    await liveOnWs(t);
    t.lastWs().send({ type: 'ping', last_seq: 2 });
    await t.clock.advance(0);
    assert.deepEqual(t.applied(), [1, 2]);
  });

  it('stops everything after the terminal event', async () => {
    const t = setup();
    await liveOnWs(t);
    const ws = t.lastWs();
    ws.send(ev(1, 'running'));
    ws.send(ev(2, 'completed', { images: [] }));
    ws.send(ev(3, 'progress')); // nothing is applied after the end
    await flush();
    assert.deepEqual(t.applied(), [1, 2]);
    assert.equal(t.manager.state.mode, 'done');
    assert.ok(ws.closed);
    ws.onclose?.({ code: 1000 });
    await t.clock.advance(600000);
    assert.equal(t.sockets.length, 1, 'no reconnect after the end');
    assert.equal(t.clock.timers.size, 0, 'no timers left');
  });

  it('does not stop at a failed event that a retry already followed', async () => {
    const t = setup({ events: [ev(1, 'failed'), ev(2, 'retry'), ev(3, 'queued')], status: 'queued' });
    await liveOnWs(t);
    const ws = t.lastWs();
    ws.send(ev(1, 'failed', { error: {} }));
    ws.send(ev(2, 'retry', { attempt: 2, max_attempts: 3 }, 2));
    ws.send(ev(3, 'queued', {}, 2));
    await flush();
    assert.deepEqual(t.applied(), [1, 2, 3]);
    assert.equal(t.manager.state.mode, 'live');
  });

  it('re-reads the job and replays from 0 on a reset welcome', async () => {
    const t = setup({ events: [ev(1), ev(2)] });
    t.manager.state.cursor = 9; // a cursor beyond the server's log
    t.manager.start();
    await t.clock.advance(0);
    t.lastWs().send({ type: 'welcome', reset: true, last_seq: 2, status: 'running' });
    await t.clock.advance(0);
    const snaps = t.log.filter((m) => m.type === 'snapshot');
    assert.equal(snaps.length, 2);
    assert.equal(snaps[1].reset, true);
    assert.equal(t.sockets.length, 2);
    assert.equal(t.lastWs().after, 0);
    assert.ok(t.sockets[0].closed);
  });

  it('resets on a poll answered 400 (cursor beyond the log)', async () => {
    const t = setup({ events: [ev(1)], forced: 'poll' });
    t.manager.state.cursor = 5;
    t.manager.start();
    await t.clock.advance(0);
    const snaps = t.log.filter((m) => m.type === 'snapshot');
    assert.equal(snaps.length, 2);
    assert.deepEqual(t.applied(), [1]);
  });
});

describe('the ladder', () => {
  it('steps down at once when a never-worked WebSocket closes before welcome', async () => {
    const t = setup();
    t.manager.start();
    await t.clock.advance(0);
    const before = t.clock.now();
    t.lastWs().serverClose(1006);
    await t.clock.advance(0);
    assert.equal(t.sources.length, 1);
    assert.equal(t.clock.now(), before, 'no waiting');
    t.lastEs().welcome({ last_seq: 0, status: 'running' });
    await flush();
    const s = t.manager.state;
    assert.equal(s.mode, 'live');
    assert.equal(s.transport, 'sse');
    assert.equal(s.lastStepDown.from, 'ws');
    assert.match(s.lastStepDown.reason, /WebSocket closed before it was confirmed/);
  });

  it('times out WebSocket at 3 s and SSE at 4 s, then polls (live within 8 s)', async () => {
    const t = setup({ events: [ev(1, 'queued')] });
    t.manager.start();
    await t.clock.advance(0);
    await t.clock.advance(2999);
    assert.equal(t.sources.length, 0);
    await t.clock.advance(1);
    assert.equal(t.sources.length, 1);
    assert.match(t.manager.state.lastStepDown.reason, /not confirmed within 3 s/);
    await t.clock.advance(3999);
    assert.equal(t.server.polls.length, 0);
    await t.clock.advance(1);
    assert.equal(t.server.polls[0], '/api/jobs/job1/events?after=0&wait=0');
    assert.equal(t.manager.state.mode, 'live');
    assert.equal(t.manager.state.transport, 'poll');
    assert.match(t.manager.state.lastStepDown.reason, /SSE was not confirmed within 4 s/);
    assert.deepEqual(t.applied(), [1]);
    // then long polls with the cursor
    await t.clock.advance(0);
    assert.equal(t.server.polls[1], '/api/jobs/job1/events?after=1&wait=25');
  });

  it('reconnects a transport that worked with jittered backoff, then steps down after repeated failures', async () => {
    const t = setup({ random: () => 0.5 });
    await liveOnWs(t);
    // drop #1: backoff attempt 0 -> 0.5 * 500 = 250 ms
    t.lastWs().serverClose(1006);
    await t.clock.advance(0);
    assert.equal(t.manager.state.mode, 'reconnecting');
    assert.equal(t.manager.state.retryAt, t.clock.now() + 250);
    await t.clock.advance(249);
    assert.equal(t.sockets.length, 1);
    await t.clock.advance(1);
    assert.equal(t.sockets.length, 2, 'same transport again');
    // drop #2 before welcome: attempt 1 -> 500 ms
    t.lastWs().serverClose(1006);
    await t.clock.advance(0);
    assert.equal(t.manager.state.retryAt, t.clock.now() + 500);
    await t.clock.advance(500);
    assert.equal(t.sockets.length, 3);
    // drop #3: the server answers, so it is the transport: step down to SSE
    t.lastWs().serverClose(1006);
    await t.clock.advance(0);
    assert.equal(t.sources.length, 1);
    assert.match(t.manager.state.lastStepDown.reason, /WebSocket failed 3 times in a row/);
  });

  it('does not step down while the whole server is gone; reconnects the same transport when it is back', async () => {
    const t = setup({ random: () => 0.5 });
    await liveOnWs(t);
    t.server.down = true;
    for (let i = 0; i < 3; i++) {
      t.lastWs().serverClose(1006);
      await t.clock.advance(2000);
    }
    assert.equal(t.manager.state.mode, 'offline');
    assert.equal(t.sources.length, 0, 'no step down for an outage');
    await t.clock.advance(20000);
    assert.equal(t.manager.state.mode, 'offline');
    t.server.down = false;
    await t.clock.advance(10000);
    assert.equal(t.lastWs().closed, false);
    assert.equal(t.manager.state.transport, 'ws');
    t.lastWs().send({ type: 'welcome', last_seq: 0, status: 'running' });
    await flush();
    assert.equal(t.manager.state.mode, 'live');
  });

  it('declares a silent connection dead after the watchdog; pings keep it alive', async () => {
    const t = setup();
    await liveOnWs(t);
    await t.clock.advance(30000);
    t.lastWs().send({ type: 'ping', last_seq: 0 });
    await t.clock.advance(34999);
    assert.equal(t.manager.state.mode, 'live');
    await t.clock.advance(1);
    assert.equal(t.manager.state.mode, 'reconnecting');
    assert.match(t.manager.state.lastReason, /No data from the server for 35 s/);
  });

  it('probes back up to WebSocket from SSE and adopts it on welcome, losing nothing', async () => {
    const t = setup({ settings: { probeIntervalMs: 60000, watchdogMs: 10 ** 9 } });
    t.manager.start();
    await t.clock.advance(0);
    t.lastWs().serverClose(1006); // blocked
    await t.clock.advance(0);
    const es = t.lastEs();
    es.welcome({ last_seq: 0 });
    es.event(ev(1));
    await flush();
    assert.equal(t.manager.state.transport, 'sse');
    await t.clock.advance(59999);
    assert.equal(t.sockets.length, 1);
    await t.clock.advance(1);
    assert.equal(t.sockets.length, 2);
    const probe = t.lastWs();
    assert.equal(probe.after, 1, 'probe resumes from the cursor');
    es.event(ev(2)); // SSE keeps working meanwhile
    probe.send({ type: 'welcome', last_seq: 2 });
    probe.send(ev(2)); // duplicate from the new transport
    probe.send(ev(3));
    await flush();
    assert.ok(es.closed);
    assert.equal(t.manager.state.transport, 'ws');
    assert.equal(t.manager.state.mode, 'live');
    assert.deepEqual(t.applied(), [1, 2, 3]);
    assert.deepEqual(t.appliedVia(), ['sse', 'sse', 'ws']);
  });

  it('keeps the current transport when the probe fails and tries again later', async () => {
    const t = setup({ settings: { probeIntervalMs: 1000 } });
    t.manager.start();
    await t.clock.advance(0);
    t.lastWs().serverClose(1006);
    await t.clock.advance(0);
    t.lastEs().welcome({});
    await t.clock.advance(1000);
    t.lastWs().serverClose(1006); // probe refused
    await t.clock.advance(0);
    assert.equal(t.manager.state.transport, 'sse');
    assert.equal(t.manager.state.mode, 'live');
    assert.equal(t.lastEs().closed, false);
    await t.clock.advance(1000);
    assert.equal(t.sockets.length, 3);
  });

  it('from polling probes WebSocket, then SSE', async () => {
    const t = setup({ settings: { probeIntervalMs: 1000 }, forced: null });
    t.manager.start();
    await t.clock.advance(0);
    t.lastWs().serverClose(1006);
    await t.clock.advance(0);
    t.lastEs().fail();
    await t.clock.advance(0);
    assert.equal(t.manager.state.transport, 'poll');
    await t.clock.advance(1000);
    t.lastWs().serverClose(1006);
    await t.clock.advance(0);
    assert.equal(t.sources.length, 2, 'SSE probed after WebSocket');
    t.lastEs().welcome({});
    await t.clock.advance(0);
    assert.equal(t.manager.state.transport, 'sse');
  });
});

describe('forced transport and user switch', () => {
  it('?transport=sse uses only SSE: no step down, no probe', async () => {
    const t = setup({ forced: 'sse', settings: { probeIntervalMs: 1000 } });
    t.manager.start();
    await t.clock.advance(0);
    assert.equal(t.sockets.length, 0);
    t.lastEs().fail();
    await t.clock.advance(0);
    assert.equal(t.manager.state.mode, 'reconnecting');
    await t.clock.advance(600);
    assert.equal(t.sources.length, 2);
    t.lastEs().welcome({});
    await t.clock.advance(10000);
    assert.equal(t.sockets.length, 0, 'never probes when forced');
    assert.equal(t.manager.state.transport, 'sse');
  });

  it('?transport=poll polls from the start', async () => {
    const t = setup({ forced: 'poll', events: [ev(1), ev(2, 'completed')], status: 'running' });
    t.manager.start();
    await t.clock.advance(0);
    assert.equal(t.sockets.length + t.sources.length, 0);
    assert.deepEqual(t.applied(), [1, 2]);
    assert.equal(t.manager.state.mode, 'done');
  });

  it('switchTo("poll") moves to polling with a reason, switchTo(null) goes back to automatic', async () => {
    const t = setup({ events: [ev(1)] });
    await liveOnWs(t);
    t.manager.switchTo('poll');
    await t.clock.advance(0);
    assert.ok(t.sockets[0].closed);
    assert.equal(t.manager.state.transport, 'poll');
    assert.equal(t.manager.state.forced, 'poll');
    assert.match(t.manager.state.lastStepDown.reason, /by you/);
    t.manager.switchTo(null);
    await t.clock.advance(0);
    assert.equal(t.sockets.length, 2);
  });
});

describe('finished jobs and retries', () => {
  it('reads a finished job with plain polls and never opens a stream', async () => {
    const t = setup({ status: 'completed', events: [ev(1, 'queued'), ev(2, 'running'), ev(3, 'completed')] });
    t.manager.start();
    await t.clock.advance(0);
    assert.deepEqual(t.applied(), [1, 2, 3]);
    assert.equal(t.manager.state.mode, 'done');
    assert.equal(t.sockets.length + t.sources.length, 0);
    assert.equal(t.manager.state.transport, 'ws', 'the ladder level is untouched');
  });

  it('resume() after a retry continues from the cursor', async () => {
    const t = setup({ events: [ev(1, 'failed')], status: 'running' });
    await liveOnWs(t);
    t.lastWs().send(ev(1, 'failed', { error: {} }));
    await flush();
    assert.equal(t.manager.state.mode, 'done');
    t.server.status = 'queued';
    t.server.push(ev(2, 'retry'), ev(3, 'queued'));
    t.manager.resume();
    await t.clock.advance(0);
    assert.equal(t.lastWs().after, 1);
  });

  it('obeys Retry-After on a 503 poll', async () => {
    const t = setup({ forced: 'poll', events: [ev(1)] });
    t.manager.start();
    await t.clock.advance(0);
    t.server.pollStatus = 503;
    t.server.push(ev(2));
    await t.clock.advance(0);
    // the held long poll answered 503 with no Retry-After header -> backoff
    assert.equal(t.manager.state.mode, 'reconnecting');
  });
});

describe('settings from the query string', () => {
  it('reads known timing overrides only', () => {
    const p = new URLSearchParams('ws_timeout_ms=500&sse_timeout_ms=700&backoff_cap_ms=x&probe_ms=2000&bogus=1');
    assert.deepEqual(settingsFromQuery(p), { wsProofMs: 500, sseProofMs: 700, probeIntervalMs: 2000 });
    assert.equal(parseTransport('sse'), 'sse');
    assert.equal(parseTransport('carrier-pigeon'), null);
  });
});
