import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import {
  describeCommand,
  missingServerMessage,
  resolveServerCommand,
  settingKeys,
  toServerSettings,
} from '../common/settings';

// out/test/ -> the package root
const packageJson = JSON.parse(readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8'));
const properties: Record<string, { default?: unknown }> = packageJson.contributes.configuration.properties;
const keys = settingKeys(packageJson);

/** A stand-in for WorkspaceConfiguration.get: user values over package.json defaults. */
function configuration(user: Record<string, unknown>): (key: string) => unknown {
  return key => (key in user ? user[key] : properties[`vllmGhost.${key}`]?.default);
}

describe('settingKeys', () => {
  it('lists every vllmGhost.* setting without the prefix', () => {
    assert.ok(keys.includes('completion.maxTokens'));
    assert.ok(keys.includes('vllm.startupTimeoutS'));
    assert.ok(keys.includes('backend.apiKeyEnv'));
    assert.ok(keys.includes('server.command'));
    assert.equal(keys.length, Object.keys(properties).length);
  });

  it('accepts configuration as an array of blocks', () => {
    const pkg = { contributes: { configuration: [{ properties: { 'vllmGhost.a.b': {} } }, { properties: { 'other.x': {} } }] } };
    assert.deepEqual(settingKeys(pkg), ['a.b']);
  });
});

describe('toServerSettings', () => {
  it('nests the defaults into the five server sections', () => {
    const settings = toServerSettings(configuration({}), keys);
    assert.deepEqual(Object.keys(settings).sort(), ['backend', 'completion', 'log', 'model', 'vllm']);
    assert.equal(settings.log.level, 'warning');
    assert.equal(settings.backend.mode, 'managed');
    assert.equal(settings.model.path, '');
    assert.equal(settings.model.preset, 'auto');
    assert.equal(settings.completion.maxTokens, 128);
    assert.equal(settings.completion.debounceMs, -1);
    assert.deepEqual(settings.vllm.command, ['vllm', 'serve']);
    assert.equal(settings.vllm.startupTimeoutS, 1800);
  });

  it('never sends the client-only server.* keys', () => {
    const settings = toServerSettings(configuration({ 'server.command': ['/x/python', '-m', 'langserver'] }), keys);
    assert.equal('server' in settings, false);
    assert.equal(JSON.stringify(settings).includes('/x/python'), false);
  });

  it('carries user values, including lists and objects, as plain JSON', () => {
    const user = {
      'model.path': '/models/tiny',
      'model.name': 'tiny',
      'vllm.command': ['/venv/bin/python', '-m', 'vllm.entrypoints.openai.api_server'],
      'vllm.args': ['--enforce-eager'],
      'vllm.env': { VLLM_CPU_KVCACHE_SPACE: '1' },
      'completion.enabled': false,
      'completion.disabledLanguages': ['markdown'],
    };
    const settings = toServerSettings(configuration(user), keys);
    assert.deepEqual(settings.model, { path: '/models/tiny', preset: 'auto', name: 'tiny', promptFormat: 'chat-fim' });
    assert.deepEqual(settings.vllm.command, user['vllm.command']);
    assert.deepEqual(settings.vllm.env, { VLLM_CPU_KVCACHE_SPACE: '1' });
    assert.equal(settings.completion.enabled, false);
    assert.deepEqual(settings.completion.disabledLanguages, ['markdown']);
    // a copy, not the configuration's own object
    assert.notEqual(settings.vllm.env, user['vllm.env']);
  });

  it('skips unknown sections and unset values', () => {
    const get = (key: string): unknown => ({ 'backend.url': 'http://h/v1', 'x.y': 1 })[key];
    const settings = toServerSettings(get, ['backend.url', 'backend.apiKey', 'x.y', 'flat']);
    assert.deepEqual(settings, { backend: { url: 'http://h/v1' }, model: {}, vllm: {}, completion: {}, log: {} });
  });

  it('nests dotted names (completion.crossFile.*)', () => {
    const settings = toServerSettings(configuration({ 'completion.crossFile.enabled': false }), keys);
    assert.deepEqual(settings.completion.crossFile, { enabled: false, maxTokens: 2048, sources: ['open', 'edits', 'imports'] });
  });
});

describe('resolveServerCommand', () => {
  const nothing = { which: () => undefined };

  it('uses vllmGhost.server.command when set', () => {
    const command = resolveServerCommand(['/venv/bin/python', '-m', 'langserver'], {
      which: () => '/usr/bin/vllm-ghost',
      interpreter: '/usr/bin/python3',
    });
    assert.deepEqual(command, { command: '/venv/bin/python', args: ['-m', 'langserver'], source: 'setting' });
  });

  it('falls back to vllm-ghost lsp on PATH', () => {
    const which = (name: string): string | undefined => (name === 'vllm-ghost' ? '/home/u/.local/bin/vllm-ghost' : undefined);
    assert.deepEqual(resolveServerCommand([], { which, interpreter: '/usr/bin/python3' }), {
      command: '/home/u/.local/bin/vllm-ghost',
      args: ['lsp'],
      source: 'path',
    });
  });

  it("then to the Python extension's interpreter with -m langserver", () => {
    assert.deepEqual(resolveServerCommand(undefined, { ...nothing, interpreter: '/venv/bin/python' }), {
      command: '/venv/bin/python',
      args: ['-m', 'langserver'],
      source: 'python-extension',
    });
  });

  it('gives nothing when nothing is found, and ignores malformed settings', () => {
    assert.equal(resolveServerCommand([], nothing), undefined);
    assert.equal(resolveServerCommand([''], nothing), undefined);
    assert.equal(resolveServerCommand('vllm-ghost lsp', nothing), undefined);
    assert.equal(resolveServerCommand([1, 2], nothing), undefined);
  });

  it('describes a command for messages, quoting what needs it', () => {
    assert.equal(describeCommand({ command: '/a b/python', args: ['-m', 'langserver'], source: 'setting' }), '"/a b/python" -m langserver');
  });

  it('tells the cause, then the fix', () => {
    const message = missingServerMessage('the server command python -m langserver failed at start: No module named langserver');
    assert.match(message, /^vLLM Ghost: the server command python -m langserver failed at start: No module named langserver\. Fix: /);
    assert.match(message, /pip install vllm_ghost-<version>-py3-none-any.whl/);
    assert.match(message, /Install Server/);
    assert.match(message, /vllmGhost\.server\.command/);
    assert.match(missingServerMessage('not found.'), /^vLLM Ghost: not found\. Fix:/);
  });
});
