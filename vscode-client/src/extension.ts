// vLLM Ghost: a thin client. The Python language server does all completion work; this starts it,
// shows its state and offers the commands.
import * as vscode from 'vscode';
import { createLog, logInfo, showLog } from './common/log';
import { onInterpreterChange } from './common/python';
import { SERVER_ACCEPTED, SERVER_START_MODEL, SERVER_STOP_MODEL, ServerManager } from './common/server';
import { SECTION, settingKeys } from './common/settings';
import { MENU_COMMAND, StatusBar, showMenu } from './common/statusBar';
import { completionsAllowed, snoozeMinutesLeft, toggledLanguages } from './common/status';
import { registerContinue } from './continue';
import { ServerInstaller } from './install';

let server: ServerManager | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const log = createLog();
  context.subscriptions.push(log);
  const version = (context.extension.packageJSON as { version?: string }).version ?? '?';
  logInfo(`vLLM Ghost ${version} activating (VS Code ${vscode.version})`);

  const statusBar = new StatusBar();
  context.subscriptions.push(statusBar);
  const completionsEnabled = (): boolean =>
    vscode.workspace.getConfiguration(SECTION).get<boolean>('completion.enabled', true);
  statusBar.setCompletionsEnabled(completionsEnabled());

  const keys = settingKeys(context.extension.packageJSON as Parameters<typeof settingKeys>[0]);
  const installer = new ServerInstaller(context);
  const disabledLanguages = (): string[] =>
    vscode.workspace.getConfiguration(SECTION).get<string[]>('completion.disabledLanguages', []);
  const showLanguage = (): void => {
    const id = vscode.window.activeTextEditor?.document.languageId;
    statusBar.setLanguage(id ? { id, disabled: disabledLanguages().includes(id) } : undefined);
  };
  showLanguage();
  // Snoozed or off for the language: VS Code's request never reaches the server.
  const allowed = (document: vscode.TextDocument): boolean =>
    completionsAllowed(document.languageId, disabledLanguages(), statusBar.snoozeEnd, Date.now());
  const manager = new ServerManager(log, statusBar, keys, installer, allowed);
  server = manager;
  context.subscriptions.push(manager);

  context.subscriptions.push(
    vscode.commands.registerCommand('vllmGhost.restartServer', () => manager.restart()),
    vscode.commands.registerCommand('vllmGhost.restartModel', () => manager.restartModel()),
    vscode.commands.registerCommand('vllmGhost.stopModel', () => manager.modelCommand(SERVER_STOP_MODEL)),
    // Not in the palette: the server puts it on every item, VS Code runs it when one is accepted.
    vscode.commands.registerCommand(SERVER_ACCEPTED, (...args: unknown[]) => manager.accepted(args)),
    vscode.commands.registerCommand('vllmGhost.startModel', () => manager.modelCommand(SERVER_START_MODEL)),
    vscode.commands.registerCommand('vllmGhost.toggleCompletions', () => toggleCompletions()),
    vscode.commands.registerCommand('vllmGhost.snooze', (minutes?: number) => snooze(statusBar, minutes)),
    vscode.commands.registerCommand('vllmGhost.toggleLanguage', (language?: string) => toggleLanguage(language)),
    vscode.window.onDidChangeActiveTextEditor(() => showLanguage()),
    vscode.commands.registerCommand('vllmGhost.showLog', () => showLog()),
    vscode.commands.registerCommand('vllmGhost.installServer', async () => {
      if (await installer.install()) {
        await manager.restart();
      }
    }),
    vscode.commands.registerCommand(MENU_COMMAND, () => {
      const id = vscode.window.activeTextEditor?.document.languageId;
      const language = id ? { id, disabled: disabledLanguages().includes(id) } : undefined;
      return showMenu(statusBar.current, completionsEnabled(), snoozeMinutesLeft(statusBar.snoozeEnd, Date.now()), language);
    }),
    vscode.workspace.onDidChangeConfiguration(event => {
      if (!event.affectsConfiguration(SECTION)) {
        return;
      }
      const wasEnabled = statusBar.completionsEnabled;
      statusBar.setCompletionsEnabled(completionsEnabled());
      showLanguage();
      if (wasEnabled && !completionsEnabled()) {
        void offerStopModel(statusBar.current.state, manager);
      }
      if (event.affectsConfiguration(`${SECTION}.server`)) {
        logInfo('vllmGhost.server.* changed: restarting the language server');
        void manager.restart();
      } else {
        manager.sendSettings();
      }
    }),
  );

  void manager.start();
  registerContinue(context, () => statusBar.current);

  const interpreterWatch = await onInterpreterChange(() => {
    const configured = vscode.workspace.getConfiguration(SECTION).get<string[]>('server.command', []);
    if (configured.length === 0) {
      logInfo('the Python interpreter changed: restarting the language server');
      void manager.restart();
    }
  });
  if (interpreterWatch) {
    context.subscriptions.push(interpreterWatch);
  }
}

/** Completions turned off: the model still holds the GPU. Offer to free it (not by default: a
 * 30B model takes minutes to load again, and other windows may be using it). */
async function offerStopModel(state: string, manager: ServerManager): Promise<void> {
  if (state !== 'ready' && state !== 'loading' && state !== 'starting') {
    return;
  }
  const choice = await vscode.window.showInformationMessage(
    'vLLM Ghost: completions are off, but the model still holds the GPU. Stop it? (every window sharing it stops too)',
    STOP_MODEL_ACTION,
    'Keep Loaded',
  );
  if (choice === STOP_MODEL_ACTION) {
    await manager.modelCommand(SERVER_STOP_MODEL);
  }
}

const STOP_MODEL_ACTION = 'Stop Model';
const SNOOZE_CHOICES = [5, 15, 60];

/** Snooze completions in this window for `minutes` (asked when not given; 0 resumes). */
async function snooze(statusBar: StatusBar, minutes?: number): Promise<void> {
  if (minutes === undefined) {
    const picked = await vscode.window.showQuickPick(
      SNOOZE_CHOICES.map(choice => ({ label: `${choice} minutes`, minutes: choice })),
      { title: 'vLLM Ghost: snooze completions for' },
    );
    if (!picked) {
      return;
    }
    minutes = picked.minutes;
  }
  statusBar.snooze(minutes);
  logInfo(minutes > 0 ? `completions snoozed for ${minutes} min` : 'completions resumed');
}

/** Completions off (or on again) for one language: vllmGhost.completion.disabledLanguages. */
async function toggleLanguage(language?: string): Promise<void> {
  const id = language ?? vscode.window.activeTextEditor?.document.languageId;
  if (!id) {
    return;
  }
  const config = vscode.workspace.getConfiguration(SECTION);
  const next = toggledLanguages(config.get<string[]>('completion.disabledLanguages', []), id);
  await config.update('completion.disabledLanguages', next, vscode.ConfigurationTarget.Global);
  logInfo(`completions ${next.includes(id) ? 'off' : 'on'} for ${id}`);
}

async function toggleCompletions(): Promise<void> {
  const config = vscode.workspace.getConfiguration(SECTION);
  const enabled = config.get<boolean>('completion.enabled', true);
  const inspected = config.inspect<boolean>('completion.enabled');
  const target =
    inspected?.workspaceFolderValue !== undefined
      ? vscode.ConfigurationTarget.WorkspaceFolder
      : inspected?.workspaceValue !== undefined
        ? vscode.ConfigurationTarget.Workspace
        : vscode.ConfigurationTarget.Global;
  await config.update('completion.enabled', !enabled, target);
  logInfo(`completions ${enabled ? 'disabled' : 'enabled'}`);
}

export async function deactivate(): Promise<void> {
  await server?.stop(4000);
  server = undefined;
}
