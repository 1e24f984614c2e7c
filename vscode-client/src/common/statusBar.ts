// The status bar item: state from the server, spinner while the model loads, quick pick on click.
import * as vscode from 'vscode';
import { NAME, Status, present } from './status';

export const MENU_COMMAND = 'vllmGhost.showMenu';

export class StatusBar implements vscode.Disposable {
  private readonly item: vscode.StatusBarItem;
  private status: Status = { state: 'starting', message: 'Starting the language server', detail: {} };
  private progress: string | undefined;
  private enabled = true;
  private snoozedUntil: number | undefined;
  private snoozeTimer: NodeJS.Timeout | undefined;
  private language: { id: string; disabled: boolean } | undefined;

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

  get snoozed(): boolean {
    return this.snoozedUntil !== undefined && this.snoozedUntil > Date.now();
  }

  get snoozeEnd(): number | undefined {
    return this.snoozedUntil;
  }

  /** Snooze for `minutes` (0 = resume); the item counts the minutes down. */
  snooze(minutes: number): void {
    clearInterval(this.snoozeTimer);
    this.snoozeTimer = undefined;
    this.snoozedUntil = minutes > 0 ? Date.now() + minutes * 60000 : undefined;
    if (this.snoozedUntil !== undefined) {
      this.snoozeTimer = setInterval(() => {
        if (!this.snoozed) {
          this.snooze(0);
        }
        this.render();
      }, 15000);
    }
    this.render();
  }

  /** The active editor's language and whether completions are off for it (undefined: no editor). */
  setLanguage(language: { id: string; disabled: boolean } | undefined): void {
    this.language = language;
    this.render();
  }

  setCompletionsEnabled(enabled: boolean): void {
    this.enabled = enabled;
    this.render();
  }

  private render(): void {
    const view = present(this.status, {
      completionsEnabled: this.enabled,
      progress: this.progress,
      snoozedUntil: this.snoozedUntil,
      language: this.language,
    });
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
    clearInterval(this.snoozeTimer);
    this.item.dispose();
  }
}

interface MenuItem extends vscode.QuickPickItem {
  command: string;
  args?: unknown[];
}

/** The quick pick the status bar item opens. */
export async function showMenu(
  status: Status,
  completionsEnabled: boolean,
  snoozedMinutes = 0,
  language?: { id: string; disabled: boolean },
): Promise<void> {
  const loaded = status.state === 'ready' || status.state === 'loading' || status.state === 'starting';
  const items: MenuItem[] = [
    loaded
      ? { label: '$(debug-stop) Stop Model', description: 'free the GPU (every window sharing it)', command: 'vllmGhost.stopModel' }
      : { label: '$(play) Start Model', description: 'load the model', command: 'vllmGhost.startModel' },
    { label: '$(debug-restart) Restart Model', description: 'stop and start vLLM', command: 'vllmGhost.restartModel' },
    { label: '$(refresh) Restart Server', description: 'restart the language server', command: 'vllmGhost.restartServer' },
    snoozedMinutes > 0
      ? { label: '$(play) Resume Completions', description: `snoozed, ${snoozedMinutes} min left`, command: 'vllmGhost.snooze', args: [0] }
      : { label: '$(clock) Snooze…', description: '5, 15 or 60 minutes', command: 'vllmGhost.snooze' },
    ...(language
      ? [{
          label: language.disabled ? `$(check) Enable for ${language.id}` : `$(circle-slash) Disable for ${language.id}`,
          description: 'vllmGhost.completion.disabledLanguages',
          command: 'vllmGhost.toggleLanguage',
          args: [language.id],
        }]
      : []),
    {
      label: completionsEnabled ? '$(circle-slash) Disable Completions' : '$(check) Enable Completions',
      description: 'vllmGhost.completion.enabled (everywhere)',
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
