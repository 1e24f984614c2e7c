import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import {
  ContinueConfigError,
  OurModel,
  SourceSettings,
  backupSuffix,
  entryName,
  resolveOurModel,
  shouldAskCoexistence,
  updateContinueConfig,
} from '../common/continueConfig';

const ours: OurModel = {
  model: 'qwen3-coder-flash',
  apiBase: 'http://127.0.0.1:30000/v1',
  apiKey: 'sk-test',
  contextLength: 32768,
};

// The seed's config, with the user's comments and a second model.
const SEED = `# my Continue set-up
name: my-configuration
version: 0.0.1
schema: v1
models:
  # the big one
  - name: Qwen3
    provider: openai
    model: qwen3-coder-flash
    apiBase: https://localhost:30000/v1
    apiKey: sk-xxxx # keep me secret
    defaultCompletionOptions:
      contextLength: 128000
      temperature: 0.6
      maxTokens: 1024
    roles:
      - chat
      - edit
      - autocomplete
      - apply
    capabilities:
      - tool_use
    promptTemplates:
      autocomplete: |
        <|im_start|>system
        You are a code completion assistant.<|im_end|>
  - name: Ollama small # a local one
    provider: ollama
    model: qwen2.5-coder:1.5b
    roles: [autocomplete]
context:
  - provider: code # context providers stay
`;

type Config = { name: string; version: string; schema: string; models: Record<string, unknown>[]; context?: unknown };

function ourIn(config: Config): Record<string, unknown> {
  const found = config.models.filter(model => String(model.name).startsWith('vLLM Ghost'));
  assert.equal(found.length, 1, 'exactly one entry of ours');
  return found[0];
}

describe('updateContinueConfig', () => {
  it('creates a whole config when the file is missing or empty', () => {
    for (const old of [undefined, '', '  \n']) {
      const result = updateContinueConfig(old, ours);
      assert.equal(result.action, 'created');
      const config = parse(result.text) as Config;
      assert.equal(config.schema, 'v1');
      assert.ok(config.name && config.version);
      assert.deepEqual(config.models, [
        {
          name: 'vLLM Ghost (qwen3-coder-flash)',
          provider: 'openai',
          model: 'qwen3-coder-flash',
          apiBase: 'http://127.0.0.1:30000/v1',
          apiKey: 'sk-test',
          roles: ['chat', 'edit', 'apply'],
          capabilities: ['tool_use'],
          defaultCompletionOptions: { contextLength: 32768, maxTokens: 4096, temperature: 0.7 },
        },
      ]);
    }
  });

  it('appends our entry to an existing file, keeping comments and the other entries', () => {
    const result = updateContinueConfig(SEED, ours);
    assert.equal(result.action, 'added');
    for (const comment of ['# my Continue set-up', '# the big one', '# keep me secret', '# a local one', '# context providers stay']) {
      assert.ok(result.text.includes(comment), `comment kept: ${comment}`);
    }
    const before = parse(SEED) as Config;
    const after = parse(result.text) as Config;
    assert.deepEqual(after.models.slice(0, 2), before.models, 'the other entries are untouched');
    assert.deepEqual({ ...after, models: [] }, { ...before, models: [] }, 'the top level is untouched');
    assert.equal(after.models.length, 3);
    const entry = ourIn(after);
    assert.equal(entry.name, entryName('qwen3-coder-flash'));
    assert.deepEqual(entry.roles, ['chat', 'edit', 'apply']);
    assert.ok(!(entry.roles as string[]).includes('autocomplete'));
    // The block literal of the user's prompt template survives as a block literal.
    assert.match(result.text, /autocomplete: \|\n\s+<\|im_start\|>system/);
  });

  it('is idempotent: a second run changes nothing', () => {
    for (const start of [undefined, SEED, 'models: []\n']) {
      const once = updateContinueConfig(start, ours);
      const twice = updateContinueConfig(once.text, ours);
      assert.equal(twice.action, 'unchanged');
      assert.equal(twice.text, once.text);
    }
  });

  it('updates our entry in place, changing only it and keeping its comments and the user tuning', () => {
    const first = updateContinueConfig(SEED, ours).text;
    // The user comments our entry and tunes the temperature; the server moves to another port.
    const tuned = first
      .replace('name: vLLM Ghost (qwen3-coder-flash)', 'name: vLLM Ghost (qwen3-coder-flash) # from the extension')
      .replace('temperature: 0.7', 'temperature: 0.2');
    assert.notEqual(tuned, first);
    const moved = { ...ours, apiBase: 'http://127.0.0.1:31000/v1', contextLength: 65536 };
    const result = updateContinueConfig(tuned, moved);
    assert.equal(result.action, 'updated');
    assert.ok(result.text.includes('# from the extension'));
    assert.ok(result.text.includes('# keep me secret'));
    const before = parse(tuned) as Config;
    const after = parse(result.text) as Config;
    assert.deepEqual(after.models.slice(0, 2), before.models.slice(0, 2));
    assert.equal(after.models.length, 3);
    const entry = ourIn(after);
    assert.equal(entry.apiBase, 'http://127.0.0.1:31000/v1');
    assert.deepEqual(entry.defaultCompletionOptions, { contextLength: 65536, maxTokens: 4096, temperature: 0.2 });
    // Only the changed lines differ.
    const changed = diffLines(tuned, result.text);
    assert.deepEqual(changed.sort(), ['      contextLength: 65536', '    apiBase: http://127.0.0.1:31000/v1'].sort());
    assert.equal(updateContinueConfig(result.text, moved).action, 'unchanged');
  });

  it("touches no other line, even where the user's indentation differs from yaml's", () => {
    // The seed's own layout: `capabilities:` items indented by 8, a key after the models.
    const seed = SEED.replace('    capabilities:\n      - tool_use', '    capabilities:\n        - tool_use');
    assert.notEqual(seed, SEED);
    const added = updateContinueConfig(seed, ours);
    assert.equal(added.action, 'added');
    const oldLines = seed.split('\n');
    const newLines = added.text.split('\n');
    const inserted = newLines.length - oldLines.length;
    const at = newLines.indexOf('  - name: vLLM Ghost (qwen3-coder-flash)');
    assert.ok(at > 0);
    assert.deepEqual([...newLines.slice(0, at), ...newLines.slice(at + inserted)], oldLines, 'only our lines were inserted');
    assert.deepEqual(newLines[at - 1], '    roles: [autocomplete]', 'after the last model');
    const updated = updateContinueConfig(added.text, { ...ours, apiKey: 'sk-new' });
    assert.equal(updated.action, 'updated');
    assert.deepEqual(diffLines(added.text, updated.text), ['    apiKey: sk-new']);
    assert.equal(updated.text.split('\n').length, newLines.length);
    assert.equal(updateContinueConfig(updated.text, { ...ours, apiKey: 'sk-new' }).action, 'unchanged');
  });

  it('finds our entry again when the served model name changes (one entry, not two)', () => {
    const first = updateContinueConfig(SEED, ours).text;
    const result = updateContinueConfig(first, { ...ours, model: 'tiny' });
    assert.equal(result.action, 'updated');
    const entry = ourIn(parse(result.text) as Config);
    assert.equal(entry.name, 'vLLM Ghost (tiny)');
    assert.equal(entry.model, 'tiny');
  });

  it('keeps a key already there when we know none', () => {
    const first = updateContinueConfig(undefined, ours).text;
    const result = updateContinueConfig(first, { ...ours, apiKey: undefined });
    assert.equal(result.action, 'unchanged');
    const noKey = updateContinueConfig(undefined, { ...ours, apiKey: undefined });
    assert.equal(ourIn(parse(noKey.text) as Config).apiKey, undefined);
  });

  it('adds models to a file without a models list', () => {
    const result = updateContinueConfig('# just a name\nname: mine\nversion: 1.0.0\nschema: v1\nmodels:\n', ours);
    assert.equal(result.action, 'added');
    assert.ok(result.text.startsWith('# just a name'));
    assert.equal((parse(result.text) as Config).models.length, 1);
    assert.equal(updateContinueConfig('name: mine\n', ours).action, 'added');
  });

  it('refuses files it cannot edit safely', () => {
    assert.throws(() => updateContinueConfig('models: [\n', ours), ContinueConfigError);
    assert.throws(() => updateContinueConfig('- a\n- b\n', ours), ContinueConfigError);
    assert.throws(() => updateContinueConfig('models: 3\n', ours), ContinueConfigError);
  });
});

function diffLines(a: string, b: string): string[] {
  const before = new Set(a.split('\n'));
  return b.split('\n').filter(line => !before.has(line));
}

const managed: SourceSettings = {
  mode: 'managed',
  url: 'http://127.0.0.1:30000/v1',
  apiKey: '',
  apiKeyEnv: '',
  host: '127.0.0.1',
  port: 30000,
  modelName: 'qwen3-coder-flash',
};

describe('resolveOurModel', () => {
  it('managed: fixed port, key from the key file, context length from the status', () => {
    const resolved = resolveOurModel(managed, { maxModelLen: 32768, url: 'http://127.0.0.1:30000/v1' }, 'sk-file\n');
    assert.deepEqual(resolved.model, {
      model: 'qwen3-coder-flash',
      apiBase: 'http://127.0.0.1:30000/v1',
      apiKey: 'sk-file',
      contextLength: 32768,
    });
    assert.equal(resolved.needsFixedPort, false);
    assert.deepEqual(resolved.notes, []);
  });

  it('managed without a key file: no apiKey, and says why', () => {
    const resolved = resolveOurModel({ ...managed, host: '0.0.0.0' }, {}, undefined);
    assert.equal(resolved.model?.apiKey, undefined);
    assert.equal(resolved.model?.apiBase, 'http://127.0.0.1:30000/v1');
    assert.ok(resolved.notes.some(note => /key file/.test(note)));
  });

  it('managed with port 0 asks for a fixed port', () => {
    const resolved = resolveOurModel({ ...managed, port: 0 }, {}, 'sk-file');
    assert.equal(resolved.model, undefined);
    assert.equal(resolved.needsFixedPort, true);
    assert.match(resolved.notes[0], /30000/);
  });

  it('external: the URL and key from the settings, or a secrets reference for an environment variable', () => {
    const external = { ...managed, mode: 'external', url: 'https://vllm.example.com/', apiKey: 'sk-team' };
    assert.deepEqual(resolveOurModel(external, { maxModelLen: 8192 }, 'ignored').model, {
      model: 'qwen3-coder-flash',
      apiBase: 'https://vllm.example.com/v1',
      apiKey: 'sk-team',
      contextLength: 8192,
    });
    const fromEnv = resolveOurModel({ ...external, apiKey: '', apiKeyEnv: 'TEAM_KEY' }, {}, undefined);
    assert.equal(fromEnv.model?.apiKey, '${{ secrets.TEAM_KEY }}');
    assert.ok(fromEnv.notes.some(note => note.includes('TEAM_KEY=')));
  });
});

describe('coexistence and backups', () => {
  it('asks once, only when both autocompletes are on', () => {
    const both = { continueInstalled: true, continueAutocomplete: true, oursEnabled: true, alreadyAsked: false };
    assert.equal(shouldAskCoexistence(both), true);
    assert.equal(shouldAskCoexistence({ ...both, continueAutocomplete: undefined }), true, "Continue's default is on");
    assert.equal(shouldAskCoexistence({ ...both, alreadyAsked: true }), false);
    assert.equal(shouldAskCoexistence({ ...both, continueAutocomplete: false }), false);
    assert.equal(shouldAskCoexistence({ ...both, oursEnabled: false }), false);
    assert.equal(shouldAskCoexistence({ ...both, continueInstalled: false }), false);
  });

  it('names backups by UTC time', () => {
    assert.equal(backupSuffix(new Date('2026-11-24T12:55:14.123Z')), '.bak-20261124T125514Z');
  });
});
