// vLLM Ghost: a thin client. The Python language server does all completion work; this starts it,
// shows its state and offers the commands.
import * as vscode from 'vscode';
import { createLog, logInfo, showLog } from './common/log';
import { onInterpreterChange } from './common/python';
import { ServerManager } from './common/server';
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
      statusBar.setCompletionsEnabled(completionsEnabled());
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
