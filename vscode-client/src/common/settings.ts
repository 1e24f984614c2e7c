// Settings: VS Code's flat `vllmGhost.*` keys -> the nested object the language server reads.
//
// Pure (no `vscode` import) so node's test runner covers it. The keys come from
// package.json's `contributes.configuration`, the one list of settings on this side;
// the server's schema is `langserver/settings.py` (a pytest test keeps the two equal).

export const SECTION = 'vllmGhost';
/** The sections the language server knows; everything else (`server.*`) stays in the client. */
export const SERVER_SECTIONS = ['backend', 'model', 'vllm', 'completion', 'log'] as const;
export type ServerSection = (typeof SERVER_SECTIONS)[number];
export type ServerSettings = Record<ServerSection, Record<string, unknown>>;

interface PackageJsonLike {
  contributes?: { configuration?: { properties?: Record<string, unknown> } | { properties?: Record<string, unknown> }[] };
}

/** Keys below `vllmGhost.` declared by package.json, e.g. `completion.maxTokens`, `server.command`. */
export function settingKeys(packageJson: PackageJsonLike): string[] {
  const configuration = packageJson.contributes?.configuration;
  const blocks = Array.isArray(configuration) ? configuration : configuration ? [configuration] : [];
  const keys: string[] = [];
  for (const block of blocks) {
    for (const name of Object.keys(block.properties ?? {})) {
      if (name.startsWith(SECTION + '.')) {
        keys.push(name.slice(SECTION.length + 1));
      }
    }
  }
  return keys;
}

/**
 * The server's settings object: `{backend: {...}, model: {...}, vllm: {...}, completion: {...}, log: {...}}`.
 * `get` reads one key below `vllmGhost.` (VS Code's `WorkspaceConfiguration.get`, defaults included).
 * Client-only keys (`server.*`) are never sent.
 */
export function toServerSettings(get: (key: string) => unknown, keys: readonly string[]): ServerSettings {
  const result: ServerSettings = { backend: {}, model: {}, vllm: {}, completion: {}, log: {} };
  for (const key of keys) {
    const dot = key.indexOf('.');
    if (dot < 0) {
      continue;
    }
    const section = key.slice(0, dot);
    if (!isServerSection(section)) {
      continue;
    }
    const value = get(key);
    if (value === undefined || value === null) {
      continue;
    }
    // A dotted name is a nested object: `completion.crossFile.enabled` -> completion.crossFile.enabled.
    const path = key.slice(dot + 1).split('.');
    let target: Record<string, unknown> = result[section];
    for (const part of path.slice(0, -1)) {
      const next = target[part];
      target = (target[part] = typeof next === 'object' && next !== null ? next : {}) as Record<string, unknown>;
    }
    target[path[path.length - 1]] = copy(value);
  }
  return result;
}

function isServerSection(section: string): section is ServerSection {
  return (SERVER_SECTIONS as readonly string[]).includes(section);
}

/** VS Code hands out frozen proxies; the server gets plain JSON. */
function copy(value: unknown): unknown {
  return JSON.parse(JSON.stringify(value)) as unknown;
}

export interface ServerCommand {
  command: string;
  args: string[];
  /** Where it came from, for the log and the error message. */
  source: 'setting' | 'installed' | 'path' | 'python-extension';
}

export interface CommandLookup {
  /** Absolute path of an executable on PATH, or undefined. */
  which: (name: string) => string | undefined;
  /** The Python extension's selected interpreter, or undefined. */
  interpreter?: string;
  /** The python of the server this extension installed (first-run install), or undefined. */
  installed?: string;
}

/**
 * How to start the language server: `vllmGhost.server.command` when set, else the server this
 * extension installed, else `vllm-ghost lsp` on PATH, else the Python extension's interpreter with
 * `-m langserver`.
 */
export function resolveServerCommand(configured: unknown, lookup: CommandLookup): ServerCommand | undefined {
  if (Array.isArray(configured) && configured.length > 0 && configured.every(part => typeof part === 'string')) {
    const [command, ...args] = configured as string[];
    if (command.trim() !== '') {
      return { command, args, source: 'setting' };
    }
  }
  if (lookup.installed) {
    return { command: lookup.installed, args: ['-m', 'langserver'], source: 'installed' };
  }
  const onPath = lookup.which('vllm-ghost');
  if (onPath) {
    return { command: onPath, args: ['lsp'], source: 'path' };
  }
  if (lookup.interpreter) {
    return { command: lookup.interpreter, args: ['-m', 'langserver'], source: 'python-extension' };
  }
  return undefined;
}

export function describeCommand(command: ServerCommand): string {
  return [command.command, ...command.args].map(part => (/[\s"']/.test(part) ? JSON.stringify(part) : part)).join(' ');
}

/** The one message shown when the server cannot be started: the cause, then the fix. */
export function missingServerMessage(reason: string): string {
  const cause = /[.!?:)]$/.test(reason.trim()) ? reason.trim() : reason.trim() + '.';
  return (
    `vLLM Ghost: ${cause} Fix: run 'vLLM Ghost: Install Server' (the server this extension carries), or ` +
    `pip install vllm_ghost-<version>-py3-none-any.whl (the wheel file of the release) in the Python environment you use, then set ` +
    'vllmGhost.server.command to its argv, e.g. ["/path/to/venv/bin/vllm-ghost", "lsp"].'
  );
}
