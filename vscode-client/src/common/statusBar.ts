// The status bar item: state from the server, spinner while the model loads, quick pick on click.
import * as vscode from 'vscode';
import { NAME, Status, present } from './status';

export const MENU_COMMAND = 'vllmGhost.showMenu';

export class StatusBar implements vscode.Disposable {
  private readonly item: vscode.StatusBarItem;
  private status: Status = { state: 'starting', message: 'Starting the language server', detail: {} };
  private progress: string | undefined;
  private enabled = true;

  constructor() {
    this.item = vscode.window.createStatusBarItem('vllmGhost.status', vscode.StatusBarAlignment.Right, 100);
    this.item.name = NAME;
    this.item.command = MENU_COMMAND;
    this.render();
    this.item.show();
  }

  get current(): Status {
    return this.status;
  }

  setStatus(status: Status): void {
    this.status = status;
    if (status.state !== 'loading' && status.state !== 'starting') {
      this.progress = undefined;
    }
    this.render();
  }

  setProgress(progress: string | undefined): void {
    this.progress = progress;
    this.render();
  }

  get completionsEnabled(): boolean {
    return this.enabled;
  }

  setCompletionsEnabled(enabled: boolean): void {
    this.enabled = enabled;
    this.render();
  }

  private render(): void {
    const view = present(this.status, { completionsEnabled: this.enabled, progress: this.progress });
    this.item.text = view.text;
    this.item.tooltip = view.tooltip;
    this.item.accessibilityInformation = { label: view.label, role: 'button' };
    this.item.backgroundColor =
      view.severity === 'error'
        ? new vscode.ThemeColor('statusBarItem.errorBackground')
        : view.severity === 'warning'
          ? new vscode.ThemeColor('statusBarItem.warningBackground')
          : undefined;
  }

  dispose(): void {
    this.item.dispose();
  }
}

interface MenuItem extends vscode.QuickPickItem {
  command: string;
  args?: unknown[];
}

/** The quick pick the status bar item opens. */
export async function showMenu(status: Status, completionsEnabled: boolean): Promise<void> {
  const loaded = status.state === 'ready' || status.state === 'loading' || status.state === 'starting';
  const items: MenuItem[] = [
    loaded
      ? { label: '$(debug-stop) Stop Model', description: 'free the GPU (every window sharing it)', command: 'vllmGhost.stopModel' }
      : { label: '$(play) Start Model', description: 'load the model', command: 'vllmGhost.startModel' },
    { label: '$(debug-restart) Restart Model', description: 'stop and start vLLM', command: 'vllmGhost.restartModel' },
    { label: '$(refresh) Restart Server', description: 'restart the language server', command: 'vllmGhost.restartServer' },
    {
      label: completionsEnabled ? '$(circle-slash) Disable Completions' : '$(check) Enable Completions',
      description: 'vllmGhost.completion.enabled',
      command: 'vllmGhost.toggleCompletions',
    },
    {
      label: '$(comment-discussion) Configure Continue',
      description: 'use this model for chat, edit and apply',
      command: 'vllmGhost.configureContinue',
    },
    { label: '$(output) Show Log', command: 'vllmGhost.showLog' },
    { label: '$(gear) Open Settings', command: 'workbench.action.openSettings', args: ['vllmGhost'] },
  ];
  const picked = await vscode.window.showQuickPick(items, {
    title: `${NAME}: ${status.state}${status.message ? ' — ' + status.message : ''}`,
    placeHolder: 'vLLM Ghost commands',
  });
  if (picked) {
    await vscode.commands.executeCommand(picked.command, ...(picked.args ?? []));
  }
}
