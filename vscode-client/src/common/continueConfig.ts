// Continue's `~/.continue/config.yaml`: our one model entry (chat, edit, apply on the vLLM that
// serves completions), computed from the old file text to the new one, keeping everything else.
//
// Pure (no `vscode` import) so node's test runner covers it. The yaml Document API keeps the
// user's comments, key order and scalar styles.
import { Document, isMap, isScalar, isSeq, parseDocument, YAMLMap, YAMLSeq } from 'yaml';

/** Entries whose name starts with this are ours; re-running the command finds and updates them. */
export const ENTRY_PREFIX = 'vLLM Ghost';
export const ROLES = ['chat', 'edit', 'apply'] as const; // not autocomplete: we provide it
export const CAPABILITIES = ['tool_use'] as const;
export const DEFAULT_PORT = 30000; // the seed's `vllm serve --port 30000`
/** Qwen3-Coder's recommended sampling for chat and agent work. */
const DEFAULT_TEMPERATURE = 0.7;
const DEFAULT_MAX_TOKENS = 4096;

export interface OurModel {
  /** Served model name (`vllmGhost.model.name`). */
  model: string;
  /** OpenAI-compatible base URL ending in /v1. */
  apiBase: string;
  /** Literal key, `${{ secrets.NAME }}`, or undefined to leave the key out. */
  apiKey?: string;
  /** vLLM's max model length, when the server reported it. */
  contextLength?: number;
}

export function entryName(model: string): string {
  return `${ENTRY_PREFIX} (${model})`;
}

export type Action = 'created' | 'added' | 'updated' | 'unchanged';

export interface UpdateResult {
  text: string;
  action: Action;
}

/** Our entry as plain data (the keys we own; `defaultCompletionOptions` keeps user tweaks). */
export function ourEntry(ours: OurModel, existingOptions?: Record<string, unknown>): Record<string, unknown> {
  const entry: Record<string, unknown> = {
    name: entryName(ours.model),
    provider: 'openai',
    model: ours.model,
    apiBase: ours.apiBase,
  };
  if (ours.apiKey !== undefined) {
    entry.apiKey = ours.apiKey;
  }
  entry.roles = [...ROLES];
  entry.capabilities = [...CAPABILITIES];
  entry.defaultCompletionOptions = completionOptions(ours.contextLength, existingOptions);
  return entry;
}

function completionOptions(contextLength: number | undefined, existing: Record<string, unknown> = {}): Record<string, unknown> {
  const options: Record<string, unknown> = { ...existing };
  if (contextLength !== undefined && Number.isInteger(contextLength) && contextLength > 0) {
    options.contextLength = contextLength;
  }
  if (options.maxTokens === undefined) {
    const context = typeof options.contextLength === 'number' ? options.contextLength : undefined;
    options.maxTokens = context ? Math.max(1, Math.min(DEFAULT_MAX_TOKENS, Math.floor(context / 4))) : DEFAULT_MAX_TOKENS;
  }
  if (options.temperature === undefined) {
    options.temperature = DEFAULT_TEMPERATURE;
  }
  return options;
}

export class ContinueConfigError extends Error {}

/**
 * The new text of Continue's config.yaml with our entry written: created when the file is
 * missing or empty, appended to `models` when absent, updated in place when present. Running
 * it on its own output changes nothing (`unchanged`, same text).
 */
export function updateContinueConfig(oldText: string | undefined, ours: OurModel): UpdateResult {
  if (oldText === undefined || oldText.trim() === '') {
    const doc = new Document({
      name: 'Local Assistant',
      version: '1.0.0',
      schema: 'v1',
      models: [ourEntry(ours)],
    });
    doc.commentBefore = ' Continue config; the vLLM Ghost entry was written by "vLLM Ghost: Configure Continue".';
    return { text: doc.toString(), action: 'created' };
  }

  const doc = parseDocument(oldText);
  if (doc.errors.length > 0) {
    throw new ContinueConfigError(`config.yaml is not valid YAML: ${doc.errors[0].message}`);
  }
  if (doc.contents === null || (isScalar(doc.contents) && doc.contents.value === null)) {
    doc.contents = doc.createNode({}) as unknown as typeof doc.contents;
  }
  if (!isMap(doc.contents)) {
    throw new ContinueConfigError('config.yaml does not hold a mapping at the top level');
  }
  const root = doc.contents as YAMLMap;
  let models = root.get('models', true);
  if (models === undefined || models === null || (isScalar(models) && models.value === null)) {
    root.set('models', doc.createNode([]));
    models = root.get('models', true);
  }
  if (!isSeq(models)) {
    throw new ContinueConfigError('`models` in config.yaml is not a list');
  }
  const list = models as YAMLSeq;
  const index = findOurs(list, ours.model);
  if (index < 0) {
    const entry = doc.createNode(ourEntry(ours)) as YAMLMap;
    list.add(entry);
    return { text: minimalEdit(oldText, doc, list, entry, undefined), action: 'added' };
  }

  const node = list.items[index] as YAMLMap;
  const current = node.toJSON() as Record<string, unknown>;
  const existingOptions = isPlainObject(current.defaultCompletionOptions) ? current.defaultCompletionOptions : undefined;
  const wanted = ourEntry(ours, existingOptions);
  if (ours.apiKey === undefined && current.apiKey !== undefined) {
    // No key known to us (managed server not started yet): keep the one already there.
    wanted.apiKey = current.apiKey;
  }
  let changed = false;
  for (const [key, value] of Object.entries(wanted)) {
    if (!deepEqual(current[key], value)) {
      setKeepingComments(doc, node, key, value);
      changed = true;
    }
  }
  return changed ? { text: minimalEdit(oldText, doc, list, node, node.range ?? undefined), action: 'updated' } : { text: oldText, action: 'unchanged' };
}

/**
 * The new text with only our entry's lines changed: yaml re-indents the whole document when it
 * prints it (e.g. the seed's `capabilities:` list indented by 8), so splice our entry's text into
 * the old text instead. Falls back to the whole document when the splice would not say the same
 * thing or would lose a comment.
 */
function minimalEdit(oldText: string, doc: Document, list: YAMLSeq, entry: YAMLMap, replaced: [number, number, number] | undefined): string {
  const whole = doc.toString();
  try {
    const first = list.items[0] as YAMLMap | undefined;
    if (list.flow || !first?.range || (replaced === undefined && list.items.length < 2)) {
      return whole;
    }
    const lineStart = oldText.lastIndexOf('\n', first.range[0] - 1) + 1;
    const lead = oldText.slice(lineStart, first.range[0]);
    const dash = lead.indexOf('-');
    if (dash < 0 || lead.trim() !== '-') {
      return whole;
    }
    const clone = entry.clone() as YAMLMap;
    clone.comment = undefined;
    clone.commentBefore = undefined;
    clone.spaceBefore = false;
    const alone = new Document();
    alone.contents = clone;
    const lines = alone.toString().replace(/\n$/, '').split('\n');
    const body = lines.map((line, i) => (i === 0 || line === '' ? line : ' '.repeat(lead.length) + line)).join('\n') + '\n';
    let candidate: string;
    if (replaced) {
      candidate = oldText.slice(0, replaced[0]) + body + oldText.slice(replaced[1]);
    } else {
      const last = list.items[list.items.length - 2] as YAMLMap;
      if (!last.range) {
        return whole;
      }
      // After the last model's trailing comments, at the start of a line.
      let at = last.range[2];
      if (at > 0 && oldText[at - 1] !== '\n') {
        const lineStart = oldText.lastIndexOf('\n', at - 1) + 1;
        at = lineStart > last.range[1] ? lineStart : last.range[1];
      }
      const before = oldText.slice(0, at);
      candidate = before + (before.endsWith('\n') ? '' : '\n') + ' '.repeat(dash) + '- ' + body + oldText.slice(at);
    }
    const check = parseDocument(candidate);
    if (check.errors.length > 0 || !deepEqual(check.toJSON(), doc.toJSON())) {
      return whole;
    }
    const comments = (text: string): string[] =>
      text
        .split('\n')
        .filter(line => line.includes('#'))
        .map(line => line.trim())
        .sort();
    return deepEqual(comments(candidate), comments(whole)) ? candidate : whole;
  } catch {
    return whole;
  }
}

/** Index of our entry: the exact name first, else any earlier `vLLM Ghost (...)` entry (another model). */
function findOurs(list: YAMLSeq, model: string): number {
  const names = list.items.map(item => (isMap(item) ? item.get('name') : undefined));
  const exact = names.indexOf(entryName(model));
  if (exact >= 0) {
    return exact;
  }
  return names.findIndex(name => typeof name === 'string' && name.startsWith(ENTRY_PREFIX + ' ('));
}

/** Set `key` in a map; a nested map is updated key by key so comments inside it stay. */
function setKeepingComments(doc: Document, map: YAMLMap, key: string, value: unknown): void {
  const existing = map.get(key, true);
  if (isMap(existing) && isPlainObject(value)) {
    const old = existing.toJSON() as Record<string, unknown>;
    for (const [subKey, subValue] of Object.entries(value)) {
      if (!deepEqual(old[subKey], subValue)) {
        setKeepingComments(doc, existing, subKey, subValue);
      }
    }
    return;
  }
  if (isScalar(existing) && !isPlainObject(value) && !Array.isArray(value)) {
    existing.value = value; // keeps the scalar's comment and quoting style
    return;
  }
  map.set(key, doc.createNode(value));
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) {
    return true;
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((item, i) => deepEqual(item, b[i]));
  }
  if (isPlainObject(a) && isPlainObject(b)) {
    const keys = Object.keys(a);
    return keys.length === Object.keys(b).length && keys.every(key => deepEqual(a[key], b[key]));
  }
  return false;
}

// --- where apiBase and the key come from -------------------------------------------------------

export interface SourceSettings {
  mode: string; // backend.mode
  url: string; // backend.url
  apiKey: string; // backend.apiKey
  apiKeyEnv: string; // backend.apiKeyEnv
  host: string; // vllm.host
  port: number; // vllm.port
  modelName: string; // model.name
}

export interface Resolved {
  /** Undefined when the config cannot be written yet (managed mode without a fixed port). */
  model?: OurModel;
  /** Things to tell the user in the confirmation dialog. */
  notes: string[];
  /** Managed mode with port 0: offer to set `vllmGhost.vllm.port` to DEFAULT_PORT. */
  needsFixedPort: boolean;
}

/**
 * Our model entry from the settings, the server's status detail (for `maxModelLen`) and, in
 * managed mode, the persisted key file's content (undefined when the file does not exist).
 * The status never carries the key.
 */
export function resolveOurModel(settings: SourceSettings, detail: Record<string, unknown>, managedKey: string | undefined): Resolved {
  const notes: string[] = [];
  const maxModelLen = detail.maxModelLen;
  const contextLength = typeof maxModelLen === 'number' && maxModelLen > 0 ? maxModelLen : undefined;
  if (contextLength === undefined) {
    notes.push("The model's context length is not known yet (it has not loaded): contextLength is not written; run the command again once vLLM Ghost is ready.");
  }
  const model = settings.modelName;
  if (settings.mode === 'external') {
    const apiBase = withV1(settings.url);
    let apiKey: string | undefined;
    if (settings.apiKey) {
      apiKey = settings.apiKey;
    } else if (settings.apiKeyEnv) {
      apiKey = `\${{ secrets.${settings.apiKeyEnv} }}`;
      notes.push(
        `The key is written as \${{ secrets.${settings.apiKeyEnv} }}: Continue reads it from ~/.continue/.env or the workspace's .env, so put ${settings.apiKeyEnv}=... there.`,
      );
    } else {
      notes.push('No API key is set (vllmGhost.backend.apiKey / apiKeyEnv): apiKey is left out.');
    }
    return { model: { model, apiBase, apiKey, contextLength }, notes, needsFixedPort: false };
  }
  if (!Number.isInteger(settings.port) || settings.port <= 0) {
    notes.unshift(
      `The managed vLLM picks a free port at each start (vllmGhost.vllm.port = 0), so Continue's config would break at the next restart. Set a fixed port (${DEFAULT_PORT}, as in the usual vllm serve set-up) to share the server with Continue.`,
    );
    return { notes, needsFixedPort: true };
  }
  const host = !settings.host || settings.host === '0.0.0.0' || settings.host === '::' ? '127.0.0.1' : settings.host;
  const apiBase = `http://${host.includes(':') ? `[${host}]` : host}:${settings.port}/v1`;
  const key = managedKey?.trim() || undefined;
  if (key === undefined) {
    notes.push(
      "The managed server's key file does not exist yet: apiKey is left out. It appears once the server has started vLLM with the fixed port; run this command again then.",
    );
  }
  return { model: { model, apiBase, apiKey: key, contextLength }, notes, needsFixedPort: false };
}

function withV1(url: string): string {
  const trimmed = url.trim().replace(/\/+$/, '');
  return trimmed.endsWith('/v1') ? trimmed : `${trimmed}/v1`;
}

// --- coexistence with Continue's own tab autocomplete --------------------------------------------

export interface CoexistenceState {
  continueInstalled: boolean;
  /** `continue.enableTabAutocomplete` (Continue's default is true). */
  continueAutocomplete: boolean | undefined;
  oursEnabled: boolean;
  alreadyAsked: boolean;
}

export function shouldAskCoexistence(state: CoexistenceState): boolean {
  return state.continueInstalled && state.continueAutocomplete !== false && state.oursEnabled && !state.alreadyAsked;
}

/** `config.yaml.bak-20261124T125500Z` style suffix. */
export function backupSuffix(date: Date): string {
  return '.bak-' + date.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
}
