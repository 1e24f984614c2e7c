import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  Status,
  completionsAllowed,
  parseStatus,
  present,
  progressText,
  snoozeMinutesLeft,
  toggledLanguages,
} from '../common/status';

const on = { completionsEnabled: true };

describe('parseStatus', () => {
  it('accepts the server notification', () => {
    const status = parseStatus({ state: 'ready', message: 'tiny ready', detail: { model: 'tiny', startupSeconds: 31.5 } });
    assert.deepEqual(status, { state: 'ready', message: 'tiny ready', detail: { model: 'tiny', startupSeconds: 31.5 } });
  });

  it('fills in a missing message and detail', () => {
    assert.deepEqual(parseStatus({ state: 'stopped' }), { state: 'stopped', message: '', detail: {} });
    assert.deepEqual(parseStatus({ state: 'loading', message: 3, detail: [1] }), { state: 'loading', message: '', detail: {} });
  });

  it('turns malformed payloads into an error status that says so', () => {
    assert.equal(parseStatus(null).state, 'error');
    assert.equal(parseStatus('ready').state, 'error');
    const unknown = parseStatus({ state: 'sleeping' });
    assert.equal(unknown.state, 'error');
    assert.match(unknown.message, /sleeping/);
  });
});

describe('present', () => {
  const status = (state: Status['state'], message = '', detail: Record<string, unknown> = {}): Status => ({ state, message, detail });

  it('labels every state for screen readers and the end-to-end test', () => {
    for (const state of ['starting', 'loading', 'ready', 'error', 'stopped', 'disabled'] as const) {
      assert.equal(present(status(state), on).label, `vLLM Ghost: ${state}`);
    }
  });

  it('spins with the message or progress while starting and loading', () => {
    const view = present(status('loading', 'Loading tiny (12 s)'), on);
    assert.equal(view.text, '$(loading~spin) vLLM Ghost: Loading tiny (12 s)');
    assert.equal(present(status('loading', 'Loading tiny'), { ...on, progress: 'Loading tiny 40%' }).text, '$(loading~spin) vLLM Ghost: Loading tiny 40%');
    assert.ok(present(status('starting', 'x'.repeat(100)), on).text.length < 70);
  });

  it('shows ready with the model in the tooltip', () => {
    const view = present(status('ready', 'tiny ready', { model: 'tiny', url: 'http://127.0.0.1:41234/v1', startupSeconds: 30.25 }), on);
    assert.equal(view.text, '$(check) vLLM Ghost');
    assert.equal(view.severity, 'normal');
    assert.match(view.tooltip, /Model: tiny/);
    assert.match(view.tooltip, /Endpoint: http:\/\/127\.0\.0\.1:41234\/v1/);
    assert.match(view.tooltip, /Started in 30\.3 s/);
  });

  it('says how completions share the vLLM: priority and a private prefix cache, or why not', () => {
    const managed = present(status('ready', 'tiny ready', { priority: -10, schedulingPolicy: 'priority' }), on);
    assert.match(managed.tooltip, /Priority: -10 \(ahead of Continue's requests\)/);
    const shared = present(status('ready', 'tiny ready', { priority: -10, cacheSalt: 'on', mode: 'external' }), on);
    assert.match(shared.tooltip, /Priority: -10 \(sent; it counts where vLLM runs --scheduling-policy priority\)/);
    assert.match(shared.tooltip, /Prefix cache: private to you/);
    const refused = present(status('ready', 'tiny ready', {
      priority: 'not sent: the server refused it (400: no)', cacheSalt: 'off (backend.cacheSalt is false)' }), on);
    assert.match(refused.tooltip, /Priority: not sent: the server refused it \(400: no\)/);
    assert.doesNotMatch(refused.tooltip, /Prefix cache|cache_salt/);
  });

  it("shows errors in red with the server's message and last output lines", () => {
    const view = present(status('error', 'vLLM exited unexpectedly (code 1)', { lastLines: ['a', 'CUDA out of memory'] }), on);
    assert.equal(view.severity, 'error');
    assert.equal(view.text, '$(error) vLLM Ghost');
    assert.match(view.tooltip, /vLLM exited unexpectedly \(code 1\)/);
    assert.match(view.tooltip, /CUDA out of memory/);
  });

  it('says off when completions are disabled, but still shows errors', () => {
    const off = { completionsEnabled: false };
    const view = present(status('ready', 'tiny ready'), off);
    assert.equal(view.label, 'vLLM Ghost: disabled');
    assert.equal(view.text, '$(circle-slash) vLLM Ghost: off');
    assert.match(view.tooltip, /Backend: ready/);
    assert.equal(present(status('error', 'boom'), off).label, 'vLLM Ghost: error');
  });

  it('warns when stopped', () => {
    const view = present(status('stopped', 'vLLM stopped'), on);
    assert.equal(view.severity, 'warning');
    assert.equal(view.text, '$(debug-stop) vLLM Ghost: stopped');
  });

  it('does not warn about a stop the user chose, and says who stopped it', () => {
    const stopped: Status = {
      state: 'stopped',
      message: 'model stopped by Stop Model in another window; Start Model loads it again',
      detail: { stoppedBy: 'another window' },
    };
    const view = present(stopped, on);
    assert.equal(view.severity, 'normal');
    assert.match(view.tooltip, /another window/);
  });

  it('shows acceptance and latency in the tooltip once something was shown', () => {
    const acceptance = {
      total: { shown: 40, accepted: 12, acceptedChars: 410, checkedChars: 400, retainedChars: 340,
        latencyMs: { p50: 182.4, p95: 421.9, n: 40 } },
    };
    const view = present({ state: 'ready', message: 'tiny ready', detail: { acceptance } }, on);
    assert.match(view.tooltip, /Accepted 12 of 40 shown \(30%\), 410 characters/);
    assert.match(view.tooltip, /Still there 30 s later: 85% of them/);
    assert.match(view.tooltip, /Latency p50 182 ms, p95 422 ms/);
    const none = present({ state: 'ready', message: '', detail: { acceptance: { total: { shown: 0 } } } }, on);
    assert.doesNotMatch(none.tooltip, /Accepted/);
  });
});

describe('progressText', () => {
  it('summarises work-done progress values', () => {
    assert.equal(progressText({ kind: 'begin', title: 'vLLM Ghost', message: 'Starting vLLM' }), 'Starting vLLM');
    assert.equal(progressText({ kind: 'report', message: 'Loading', percentage: 41.6 }), 'Loading 42%');
    assert.equal(progressText({ kind: 'begin', title: 'vLLM Ghost' }), 'vLLM Ghost');
    assert.equal(progressText({ kind: 'end', message: 'done' }), undefined);
    assert.equal(progressText(undefined), undefined);
  });
});

describe('snooze and per-language', () => {
  const ready: Status = { state: 'ready', message: 'tiny ready', detail: {} };
  const now = 1_000_000;

  it('counts the snooze down in whole minutes and shows it in the item', () => {
    assert.equal(snoozeMinutesLeft(undefined, now), 0);
    assert.equal(snoozeMinutesLeft(now - 1, now), 0);
    assert.equal(snoozeMinutesLeft(now + 15 * 60000, now), 15);
    assert.equal(snoozeMinutesLeft(now + 1000, now), 1);
    const view = present(ready, { completionsEnabled: true, snoozedUntil: now + 14 * 60000 + 1, now });
    assert.equal(view.text, '$(clock) vLLM Ghost: snoozed 15 min');
    assert.equal(view.label, 'vLLM Ghost: snoozed');
    assert.match(view.tooltip, /Snoozed: 15 min left/);
    assert.equal(present(ready, { completionsEnabled: true, snoozedUntil: now - 1, now }).label, 'vLLM Ghost: ready');
  });

  it("shows the current language's state", () => {
    const off = present(ready, { completionsEnabled: true, language: { id: 'markdown', disabled: true } });
    assert.equal(off.text, '$(circle-slash) vLLM Ghost: off for markdown');
    assert.match(off.tooltip, /Completions for markdown: off/);
    const on = present(ready, { completionsEnabled: true, language: { id: 'python', disabled: false } });
    assert.equal(on.text, '$(check) vLLM Ghost');
    assert.match(on.tooltip, /Completions for python: on/);
  });

  it('asks nothing while snoozed or for a disabled language', () => {
    assert.equal(completionsAllowed('python', [], undefined, now), true);
    assert.equal(completionsAllowed('python', ['markdown'], now + 60000, now), false);
    assert.equal(completionsAllowed('markdown', ['markdown'], undefined, now), false);
    assert.deepEqual(toggledLanguages(['markdown'], 'python'), ['markdown', 'python']);
    assert.deepEqual(toggledLanguages(['markdown', 'python'], 'markdown'), ['python']);
  });
});
