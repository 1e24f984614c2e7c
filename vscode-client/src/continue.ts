// Continue next to vLLM Ghost: the "Configure Continue to use this model" command (chat, edit and
// apply on the vLLM that serves our completions) and the one-time question when both extensions'
// tab autocompletes are on. The YAML work is in common/continueConfig.ts (pure, unit-tested).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as vscode from 'vscode';
import { logError, logInfo } from './common/log';
import {
  ContinueConfigError,
  DEFAULT_PORT,
  SourceSettings,
  backupSuffix,
  entryName,
  resolveOurModel,
  shouldAskCoexistence,
  updateContinueConfig,
} from './common/continueConfig';
import { SECTION } from './common/settings';
import { Status } from './common/status';

export const CONFIGURE_CONTINUE_COMMAND = 'vllmGhost.configureContinue';
const CONTINUE_EXTENSION = 'Continue.continue';
const CONTINUE_AUTOCOMPLETE = 'continue.enableTabAutocomplete';
const PREVIEW_SCHEME = 'vllm-ghost-preview';
const ASKED_KEY = 'vllmGhost.continueCoexistenceAsked';

/** Continue's global directory (Continue honours CONTINUE_GLOBAL_DIR too). */
export function continueDir(): string {
  return process.env.CONTINUE_GLOBAL_DIR || path.join(os.homedir(), '.continue');
}

/** Where the language server keeps the managed vLLM's persisted key (mode 0600). */
export function managedKeyFile(): string {
  const base = process.env.XDG_CONFIG_HOME || path.join(os.homedir(), '.config');
  return path.join(base, 'vllm-ghost', 'api-key');
}

export function registerContinue(context: vscode.ExtensionContext, currentStatus: () => Status): void {
  const previews = new Map<string, string>();
  context.subscriptions.push(
    vscode.workspace.registerTextDocumentContentProvider(PREVIEW_SCHEME, {
      provideTextDocumentContent: uri => previews.get(uri.path) ?? '',
    }),
    vscode.commands.registerCommand(CONFIGURE_CONTINUE_COMMAND, () =>
      configureContinue(currentStatus(), previews).catch(err => {
        logError(`Configure Continue failed: ${errorText(err)}`);
        void vscode.window.showErrorMessage(`vLLM Ghost: Configure Continue failed: ${errorText(err)}`);
      }),
    ),
    vscode.workspace.onDidChangeConfiguration(event => {
      if (event.affectsConfiguration(CONTINUE_AUTOCOMPLETE) || event.affectsConfiguration(`${SECTION}.completion.enabled`)) {
        void checkCoexistence(context);
      }
    }),
    vscode.extensions.onDidChange(() => void checkCoexistence(context)),
  );
  void checkCoexistence(context);
}

function readSettings(): SourceSettings {
  const config = vscode.workspace.getConfiguration(SECTION);
  return {
    mode: config.get<string>('backend.mode', 'managed'),
    url: config.get<string>('backend.url', ''),
    apiKey: config.get<string>('backend.apiKey', ''),
    apiKeyEnv: config.get<string>('backend.apiKeyEnv', ''),
    host: config.get<string>('vllm.host', '127.0.0.1'),
    port: config.get<number>('vllm.port', 0),
    modelName: config.get<string>('model.name', 'qwen3-coder-flash'),
  };
}

async function readText(file: string): Promise<string | undefined> {
  try {
    return await fs.promises.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      return undefined;
    }
    throw err;
  }
}

/** The scope a setting is set in (workspace folder, workspace, else user). */
function targetOf(config: vscode.WorkspaceConfiguration, key: string): vscode.ConfigurationTarget {
  const inspected = config.inspect(key);
  return inspected?.workspaceFolderValue !== undefined
    ? vscode.ConfigurationTarget.WorkspaceFolder
    : inspected?.workspaceValue !== undefined
      ? vscode.ConfigurationTarget.Workspace
      : vscode.ConfigurationTarget.Global;
}

async function configureContinue(status: Status, previews: Map<string, string>): Promise<void> {
  let settings = readSettings();
  const keyFile = managedKeyFile();
  let resolved = resolveOurModel(settings, status.detail, settings.mode === 'managed' ? await readText(keyFile) : undefined);
  if (resolved.needsFixedPort) {
    const choice = await vscode.window.showWarningMessage(
      'vLLM Ghost: Continue needs a fixed port',
      { modal: true, detail: resolved.notes[0] },
      `Use port ${DEFAULT_PORT}`,
    );
    if (choice !== `Use port ${DEFAULT_PORT}`) {
      return;
    }
    const config = vscode.workspace.getConfiguration(SECTION);
    await config.update('vllm.port', DEFAULT_PORT, targetOf(config, 'vllm.port'));
    logInfo(`vllmGhost.vllm.port set to ${DEFAULT_PORT} for Continue`);
    settings = { ...readSettings(), port: DEFAULT_PORT };
    resolved = resolveOurModel(settings, status.detail, await readText(keyFile));
  }
  const ours = resolved.model;
  if (!ours) {
    return;
  }

  const dir = continueDir();
  const file = path.join(dir, 'config.yaml');
  const oldText = await readText(file);
  let result;
  try {
    result = updateContinueConfig(oldText, ours);
  } catch (err) {
    if (err instanceof ContinueConfigError) {
      const open = await vscode.window.showErrorMessage(`vLLM Ghost: cannot update ${file}: ${err.message}`, 'Open config.yaml');
      if (open) {
        await vscode.window.showTextDocument(vscode.Uri.file(file));
      }
      return;
    }
    throw err;
  }
  const notes = [...resolved.notes];
  if (oldText === undefined && fs.existsSync(path.join(dir, 'config.json'))) {
    notes.push(`${path.join(dir, 'config.json')} exists: Continue reads config.yaml instead once it exists, so move your other models into it.`);
  }
  if (result.action === 'unchanged') {
    void vscode.window.showInformationMessage(
      `vLLM Ghost: Continue's config already has "${entryName(ours.model)}"; nothing to change.${notes.length ? ' ' + notes.join(' ') : ''}`,
    );
    return;
  }

  // Show the change: the file as it is (or empty) against the file as it would be.
  const stamp = Date.now().toString(36);
  const before = oldText === undefined ? vscode.Uri.from({ scheme: PREVIEW_SCHEME, path: `/${stamp}/config.yaml (none)` }) : vscode.Uri.file(file);
  const after = vscode.Uri.from({ scheme: PREVIEW_SCHEME, path: `/${stamp}/config.yaml (new)` });
  if (oldText === undefined) {
    previews.set(before.path, '');
  }
  previews.set(after.path, result.text);
  await vscode.commands.executeCommand('vscode.diff', before, after, `Continue config.yaml: ${result.action === 'created' ? 'new file' : 'change'} (vLLM Ghost)`, {
    preview: true,
  });

  const backup = oldText === undefined ? undefined : file + backupSuffix(new Date());
  const what =
    result.action === 'created'
      ? `Create ${file} with the model "${entryName(ours.model)}"?`
      : result.action === 'added'
        ? `Add the model "${entryName(ours.model)}" to ${file}?`
        : `Update the model "${entryName(ours.model)}" in ${file}?`;
  const detail = [
    `Continue will use ${ours.model} at ${ours.apiBase} for chat, edit and apply (autocomplete stays with vLLM Ghost).`,
    ...notes,
    backup ? `The current file is kept as ${path.basename(backup)}.` : '',
  ]
    .filter(Boolean)
    .join('\n\n');
  const choice = await vscode.window.showInformationMessage(what, { modal: true, detail }, 'Write');
  previews.delete(before.path);
  previews.delete(after.path);
  if (choice !== 'Write') {
    return;
  }

  // Refuse to overwrite a file that changed while the dialog was open.
  if ((await readText(file)) !== oldText) {
    void vscode.window.showWarningMessage(`vLLM Ghost: ${file} changed meanwhile; run the command again.`);
    return;
  }
  if (backup) {
    await fs.promises.copyFile(file, backup);
  }
  await fs.promises.mkdir(dir, { recursive: true });
  // A new file holds a key: only the user may read it.
  await fs.promises.writeFile(file, result.text, oldText === undefined ? { encoding: 'utf8', mode: 0o600 } : 'utf8');
  logInfo(`Continue config ${result.action}: ${file}${backup ? ` (backup ${backup})` : ''}`);
  const open = await vscode.window.showInformationMessage(
    `vLLM Ghost: Continue now uses "${entryName(ours.model)}" for chat, edit and apply.${backup ? ` Backup: ${backup}` : ''}`,
    'Open config.yaml',
  );
  if (open) {
    await vscode.window.showTextDocument(vscode.Uri.file(file));
  }
}

let asking = false;

/** Both tab autocompletes on: say so once per workspace and let the user pick. */
async function checkCoexistence(context: vscode.ExtensionContext): Promise<void> {
  if (asking) {
    return;
  }
  const ours = vscode.workspace.getConfiguration(SECTION);
  const continueConfig = vscode.workspace.getConfiguration('continue');
  const state = {
    continueInstalled: vscode.extensions.getExtension(CONTINUE_EXTENSION) !== undefined,
    continueAutocomplete: continueConfig.get<boolean>('enableTabAutocomplete'),
    oursEnabled: ours.get<boolean>('completion.enabled', true),
    alreadyAsked: context.workspaceState.get<boolean>(ASKED_KEY, false),
  };
  if (!shouldAskCoexistence(state)) {
    return;
  }
  asking = true;
  try {
    await context.workspaceState.update(ASKED_KEY, true);
    const keepOurs = 'Keep vLLM Ghost';
    const keepContinue = "Keep Continue's";
    const choice = await vscode.window.showInformationMessage(
      "vLLM Ghost: Continue's tab autocomplete is on as well, so two extensions offer ghost text for the same keystrokes. Which one should complete code?",
      keepOurs,
      keepContinue,
      'Keep both',
    );
    if (choice === keepOurs) {
      await continueConfig.update('enableTabAutocomplete', false, targetOf(continueConfig, 'enableTabAutocomplete'));
      logInfo(`${CONTINUE_AUTOCOMPLETE} set to false: vLLM Ghost completes code`);
    } else if (choice === keepContinue) {
      await ours.update('completion.enabled', false, targetOf(ours, 'completion.enabled'));
      logInfo(`${SECTION}.completion.enabled set to false: Continue completes code`);
    }
  } catch (err) {
    logError(`could not change the autocomplete settings: ${errorText(err)}`);
  } finally {
    asking = false;
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
