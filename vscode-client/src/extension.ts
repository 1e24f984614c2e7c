// vLLM Ghost: a thin client. The Python language server does all completion work; this starts it,
// shows its state and offers the commands.
import * as vscode from 'vscode';
import { createLog, logInfo, showLog } from './common/log';
import { onInterpreterChange } from './common/python';
import { SERVER_ACCEPTED, SERVER_START_MODEL, SERVER_STOP_MODEL, ServerManager } from './common/server';
import { SECTION, settingKeys } from './common/settings';
import { MENU_COMMAND, StatusBar, showMenu } from './common/statusBar';
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
  const manager = new ServerManager(log, statusBar, keys, installer);
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
    vscode.commands.registerCommand('vllmGhost.showLog', () => showLog()),
    vscode.commands.registerCommand('vllmGhost.installServer', async () => {
      if (await installer.install()) {
        await manager.restart();
      }
    }),
    vscode.commands.registerCommand(MENU_COMMAND, () => showMenu(statusBar.current, completionsEnabled())),
    vscode.workspace.onDidChangeConfiguration(event => {
      if (!event.affectsConfiguration(SECTION)) {
        return;
      }
      const wasEnabled = statusBar.completionsEnabled;
      statusBar.setCompletionsEnabled(completionsEnabled());
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
