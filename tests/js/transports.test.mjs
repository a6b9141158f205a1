// Each browser transport alone (web/static/js/transports/): what it opens, what it reports
// to its listener, and that it reports nothing after close().  The ladder decisions on top
// are connection.test.mjs's.  Run: node --test tests/js/
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { PollTransport, eventsUrl, parseRetryAfter } from '../../src/safelight/web/static/js/transports/poll.js';
import { SseTransport } from '../../src/safelight/web/static/js/transports/sse.js';
import { fmtS, parseJson } from '../../src/safelight/web/static/js/transports/transport.js';
import { WsTransport } from '../../src/safelight/web/static/js/transports/ws.js';
import { FakeClock, FakeServer, flush, makeDeps, makeEvent as ev } from './fakes.mjs';

const JOB_URL = 'http://test.local/api/jobs/job1';

/** A listener that records every report as [kind, payload]. */
function recorder() {
  const calls = [];
  const listener = {
    welcome: (w) => calls.push(['welcome', w]),
    frame: (f) => calls.push(['frame', f]),
    failure: (f) => calls.push(['failure', f]),
    close: (c) => calls.push(['close', c]),
  };
  const kinds = () => calls.map(([kind]) => kind);
  const last = () => calls[calls.length - 1];
  return { calls, listener, kinds, last };
}

function setup(Kind, { events = [], status = 'running', cursor = 0, fetch, extra = {} } = {}) {
  const clock = new FakeClock();
  const server = new FakeServer(clock, { status, events });
  const made = makeDeps({ server, clock });
  if (fetch) made.deps.fetch = fetch;
  const rec = recorder();
  const state = { cursor };
  const transport = new Kind({
    jobUrl: JOB_URL,
    cursor: () => state.cursor,
    deps: made.deps,
    listener: rec.listener,
    ...extra,
  });
  return { clock, server, transport, state, ...made, ...rec };
}

const POLL = { waitS: 25, graceMs: 10000, afterMs: 1000 };

describe('shared helpers', () => {
  it('parseJson accepts JSON objects only', () => {
    assert.deepEqual(parseJson('{"a":1}'), { a: 1 });
    assert.equal(parseJson('not json'), null);
    assert.equal(parseJson('3'), null);
    assert.equal(parseJson('null'), null);
    assert.equal(parseJson(undefined), null);
  });

  it('fmtS writes whole and fractional seconds', () => {
    assert.equal(fmtS(3000), '3 s');
    assert.equal(fmtS(1500), '1.5 s');
  });
});

describe('WebSocket transport', () => {
  it('opens the ws URL with the cursor of the moment and reports welcome, then frames in order', () => {
    const t = setup(WsTransport, { cursor: 7 });
    t.transport.open();
    assert.equal(t.sockets.length, 1);
    assert.equal(t.sockets[0].url, 'ws://test.local/api/jobs/job1/ws?after=7');
    const ws = t.sockets[0];
    ws.send({ type: 'welcome', transport: 'ws', last_seq: 9, status: 'running' });
    ws.send(ev(8));
    ws.send({ type: 'ping', last_seq: 9 });
    ws.onmessage({ data: 'not json' });
    ws.onmessage({ data: '"a JSON string"' });
    assert.deepEqual(t.kinds(), ['welcome', 'frame', 'frame']);
    assert.equal(t.calls[0][1].last_seq, 9);
    assert.equal(t.calls[1][1].seq, 8);
    assert.equal(t.calls[2][1].type, 'ping');
  });

  it('uses wss for an https job URL', () => {
    const t = setup(WsTransport);
    t.transport.jobUrl = 'https://secure.local/api/jobs/job1';
    t.transport.open();
    assert.equal(t.sockets[0].url, 'wss://secure.local/api/jobs/job1/ws?after=0');
  });

  it('an event carrying type "welcome" is still an event (seq decides)', () => {
    const t = setup(WsTransport);
    t.transport.open();
    t.sockets[0].send({ ...ev(1), type: 'welcome' });
    assert.deepEqual(t.kinds(), ['frame']);
  });

  it('says why a close is a failure: before welcome, server restart, plain drop', () => {
    for (const [welcome, code, reason] of [
      [false, 1006, 'WebSocket closed before it was confirmed (code 1006)'],
      [true, 1012, 'The server is restarting'],
      [true, 1011, 'WebSocket connection dropped (code 1011)'],
    ]) {
      const t = setup(WsTransport);
      t.transport.open();
      if (welcome) t.sockets[0].send({ type: 'welcome' });
      t.sockets[0].serverClose(code);
      assert.deepEqual(t.last(), ['failure', { reason }]);
    }
  });

  it('a close event without a code counts as 1006', () => {
    const t = setup(WsTransport);
    t.transport.open();
    t.sockets[0].onclose({});
    assert.match(t.last()[1].reason, /code 1006/);
  });

  it('reports a WebSocket that cannot be created on a later turn, not from inside open()', async () => {
    const t = setup(WsTransport);
    t.deps.createWebSocket = () => {
      throw new Error('blocked');
    };
    t.transport.open();
    assert.equal(t.calls.length, 0);
    await t.clock.advance(0);
    assert.deepEqual(t.calls, [['failure', { reason: 'WebSocket is not available' }]]);
  });

  it('close() hangs up with 1000, clears its timers and reports nothing more; twice is harmless', async () => {
    const t = setup(WsTransport);
    t.deps.createWebSocket = () => {
      throw new Error('blocked');
    };
    t.transport.open();
    t.transport.close();
    await t.clock.advance(0);
    assert.equal(t.calls.length, 0, 'the deferred failure is cancelled');
    assert.equal(t.clock.timers.size, 0);

    const u = setup(WsTransport);
    u.transport.open();
    const ws = u.sockets[0];
    u.transport.close();
    u.transport.close();
    assert.ok(ws.closed);
    assert.equal(ws.closeCode, 1000);
    assert.equal(ws.onmessage, null);
    assert.equal(ws.onclose, null);
    assert.equal(u.calls.length, 0);
  });
});

describe('SSE transport', () => {
  it('opens the stream URL with the cursor and types the named events', () => {
    const t = setup(SseTransport, { cursor: 3 });
    t.transport.open();
    const es = t.sources[0];
    assert.equal(es.url, 'http://test.local/api/jobs/job1/stream?after=3');
    es.welcome({ last_seq: 4 });
    es.event(ev(4));
    es.dispatch('ping'); // a ping with no data is still a ping
    es.dispatch('message', 'not an object');
    assert.deepEqual(t.kinds(), ['welcome', 'frame', 'frame']);
    assert.equal(t.calls[0][1].type, 'welcome');
    assert.equal(t.calls[0][1].last_seq, 4);
    assert.equal(t.calls[1][1].seq, 4);
    assert.deepEqual(t.calls[2][1], { type: 'ping' });
  });

  it('an error closes the EventSource at once (no browser reconnect) and is a failure', () => {
    const t = setup(SseTransport);
    t.transport.open();
    t.sources[0].fail();
    assert.ok(t.sources[0].closed);
    assert.deepEqual(t.calls, [
      ['failure', { reason: 'SSE stream was refused or broke before it was confirmed' }],
    ]);

    const u = setup(SseTransport);
    u.transport.open();
    u.sources[0].welcome({});
    u.sources[0].fail();
    assert.deepEqual(u.last(), ['failure', { reason: 'SSE stream dropped' }]);
  });

  it('reports an EventSource that cannot be created on a later turn', async () => {
    const t = setup(SseTransport);
    t.deps.createEventSource = () => {
      throw new Error('no EventSource');
    };
    t.transport.open();
    assert.equal(t.calls.length, 0);
    await t.clock.advance(0);
    assert.deepEqual(t.calls, [['failure', { reason: 'SSE is not available' }]]);
  });

  it('close() closes the EventSource and reports nothing more', () => {
    const t = setup(SseTransport);
    t.transport.open();
    const es = t.sources[0];
    t.transport.close();
    assert.ok(es.closed);
    // A listener the browser still calls after close must stay silent.
    for (const fn of es.listeners.get('error')) fn({});
    for (const fn of es.listeners.get('message')) fn({ data: JSON.stringify(ev(1)) });
    assert.equal(t.calls.length, 0);
  });
});

describe('polling transport', () => {
  it('builds the events URL with wait clamped to 0..25', () => {
    assert.equal(eventsUrl(JOB_URL, 4, 0), `${JOB_URL}/events?after=4&wait=0`);
    assert.equal(eventsUrl(JOB_URL, 4, 60), `${JOB_URL}/events?after=4&wait=25`);
    assert.equal(eventsUrl(JOB_URL, 4, -1), `${JOB_URL}/events?after=4&wait=0`);
  });

  it('reads Retry-After in seconds, capped at two minutes', () => {
    assert.equal(parseRetryAfter('2'), 2000);
    assert.equal(parseRetryAfter('9999'), 120000);
    assert.equal(parseRetryAfter(null), null);
    assert.equal(parseRetryAfter('Wed, 21 Oct 2015 07:28:00 GMT'), null);
  });

  it('proves itself with a first poll that does not wait, then long polls from the cursor', async () => {
    const t = setup(PollTransport, { events: [ev(1), ev(2)], extra: POLL });
    t.transport.open();
    await flush();
    assert.deepEqual(t.server.polls, ['/api/jobs/job1/events?after=0&wait=0']);
    assert.deepEqual(t.kinds(), ['welcome', 'frame']);
    assert.deepEqual(t.calls[0][1], { type: 'welcome', transport: 'poll', last_seq: 2 });
    const page = t.calls[1][1];
    assert.equal(page.type, 'page');
    assert.deepEqual(
      page.events.map((e) => e.seq),
      [1, 2],
    );
    assert.equal(page.last_seq, 2);
    assert.equal(page.terminal, false);
    // The manager applied both: the next poll reads its cursor, and waits.
    t.state.cursor = 2;
    await t.clock.advance(0);
    assert.equal(t.server.polls[1], '/api/jobs/job1/events?after=2&wait=25');
    t.server.push(ev(3));
    await flush();
    assert.deepEqual(t.kinds(), ['welcome', 'frame', 'frame'], 'one welcome only');
    assert.deepEqual(
      t.last()[1].events.map((e) => e.seq),
      [3],
    );
  });

  it('short polling (wait 0) follows the server pace between polls', async () => {
    const t = setup(PollTransport, { extra: { ...POLL, waitS: 0 } });
    t.transport.open();
    await t.clock.advance(999);
    assert.equal(t.server.polls.length, 1);
    await t.clock.advance(1);
    assert.equal(t.server.polls.length, 2);
    assert.equal(t.server.polls[1], '/api/jobs/job1/events?after=0&wait=0');
  });

  it('catch-up polls straight on while events come, at the server pace once none do', async () => {
    const t = setup(PollTransport, { events: [ev(1)], status: 'completed', extra: { ...POLL, waitS: 0, catchUp: true } });
    t.transport.open();
    await flush();
    t.state.cursor = 1;
    await t.clock.advance(0);
    assert.equal(t.server.polls.length, 2, 'straight on after a page with events');
    assert.equal(t.last()[1].terminal, true);
    await t.clock.advance(999);
    assert.equal(t.server.polls.length, 2);
    await t.clock.advance(1);
    assert.equal(t.server.polls.length, 3);
  });

  it('a long poll answered at once and empty (server did not hold it) waits poll_after_ms', async () => {
    const t = setup(PollTransport, { extra: POLL });
    t.server.fetch = (url) => {
      t.server.requests.push(new URL(url).pathname);
      return Promise.resolve({
        ok: true,
        status: 200,
        headers: { get: () => null },
        json: async () => ({ events: [], last_seq: 0, terminal: false, poll_after_ms: 700 }),
      });
    };
    t.transport.open(); // wait=0: straight back
    await t.clock.advance(0);
    assert.equal(t.server.requests.length, 2);
    await t.clock.advance(699); // the wait=25 poll came back at once, empty
    assert.equal(t.server.requests.length, 2);
    await t.clock.advance(1);
    assert.equal(t.server.requests.length, 3);
  });

  it('400 is a reset and 404 is fatal; neither polls again', async () => {
    const t = setup(PollTransport, { events: [ev(1)], cursor: 5, extra: POLL });
    t.transport.open();
    await t.clock.advance(60000);
    assert.deepEqual(t.calls, [['close', { kind: 'reset', reason: 'The server rejected the cursor (400)' }]]);
    assert.equal(t.server.polls.length, 1);

    const u = setup(PollTransport, { extra: POLL });
    u.transport.jobUrl = 'http://test.local/api/jobs/gone';
    u.transport.open();
    await u.clock.advance(60000);
    assert.deepEqual(u.calls, [['close', { kind: 'fatal', status: 404, problem: { title: 'Not found' } }]]);
    assert.equal(u.server.requests.length, 1);
  });

  it('another error status is an answered failure with the Retry-After', async () => {
    const t = setup(PollTransport, {
      extra: POLL,
      fetch: async () => ({
        ok: false,
        status: 503,
        headers: { get: (name) => (name === 'Retry-After' ? '2' : null) },
        json: async () => ({}),
      }),
    });
    t.transport.open();
    await flush();
    assert.deepEqual(t.calls, [['failure', { reason: 'A poll was answered 503', retryAfterMs: 2000, answered: true }]]);
  });

  it('an unreachable server is a failure that was not answered', async () => {
    const t = setup(PollTransport, { extra: POLL });
    t.server.down = true;
    t.transport.open();
    await flush();
    assert.deepEqual(t.calls, [['failure', { reason: 'A poll could not reach the server' }]]);
  });

  it('a poll with no answer after wait + grace fails once and is aborted', async () => {
    const aborted = [];
    const t = setup(PollTransport, {
      extra: { ...POLL, graceMs: 2500 },
      fetch: (_url, init) =>
        new Promise((_resolve, reject) => {
          init.signal.addEventListener('abort', () => {
            aborted.push(true);
            reject(new Error('aborted'));
          });
        }),
    });
    t.transport.open();
    await t.clock.advance(2499);
    assert.equal(t.calls.length, 0);
    await t.clock.advance(1);
    assert.deepEqual(t.calls, [['failure', { reason: 'A poll got no answer within 2.5 s' }]]);
    assert.deepEqual(aborted, [true]);
  });

  it('close() aborts the held long poll, clears its timers and reports nothing more', async () => {
    const t = setup(PollTransport, { extra: POLL });
    t.transport.open();
    await t.clock.advance(0);
    assert.equal(t.server.polls.length, 2);
    assert.equal(t.server.held.length, 1, 'the long poll is held');
    const reported = t.calls.length;
    t.transport.close();
    t.server.push(ev(1)); // would answer the held poll
    await t.clock.advance(60000);
    assert.equal(t.calls.length, reported);
    assert.equal(t.server.polls.length, 2);
    assert.equal(t.clock.timers.size, 0);
  });
});
