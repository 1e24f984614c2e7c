// The language server's lifecycle: resolve the command, start the client over stdio with the
// settings, forward configuration, restart, and turn failures into one message with the fix.
import * as vscode from 'vscode';
import {
  ClientCapabilities,
  CloseAction,
  CloseHandlerResult,
  DidChangeConfigurationNotification,
  DynamicFeature,
  ErrorAction,
  ErrorHandlerResult,
  ExecuteCommandRequest,
  FeatureState,
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  State,
  StaticFeature,
  WorkDoneProgress,
  WorkDoneProgressCreateRequest,
} from 'vscode-languageclient/node';
import * as readline from 'readline';
import { logError, logInfo } from './log';
import { INSTALL_ACTION, installOfferMessage, serverMissing } from './installPlan';
import { isRunnable, selectedInterpreter, which } from './python';
import {
  SECTION,
  ServerCommand,
  describeCommand,
  missingServerMessage,
  resolveServerCommand,
  toServerSettings,
} from './settings';
import { parseStatus, progressText } from './status';
import { StatusBar } from './statusBar';

export const STATUS_NOTIFICATION = 'vllmGhost/status';
export const SERVER_RESTART_MODEL = 'vllmGhost.restartModel';
export const SERVER_STATUS = 'vllmGhost.status';
export const SERVER_STOP_MODEL = 'vllmGhost.stopModel';
export const SERVER_START_MODEL = 'vllmGhost.startModel';
/** Each inline item carries this command; VS Code runs it on acceptance. */
export const SERVER_ACCEPTED = 'vllmGhost.accepted';
const STOP_TIMEOUT_MS = 20000;
const MAX_CRASHES = 3;
const CRASH_WINDOW_MS = 3 * 60 * 1000;

/**
 * Work-done progress drives the status bar item (one spinner, not the library's second one
 * in the window's progress area). Replaces the built-in progress feature.
 */
class StatusProgressFeature implements StaticFeature {
  constructor(
    private readonly client: LanguageClient,
    private readonly onValue: (text: string | undefined) => void,
  ) {}

  getState(): FeatureState {
    return { kind: 'static' };
  }

  fillClientCapabilities(capabilities: ClientCapabilities): void {
    capabilities.window = { ...capabilities.window, workDoneProgress: true };
  }

  initialize(): void {
    this.client.onRequest(WorkDoneProgressCreateRequest.type, ({ token }) => {
      const subscription = this.client.onProgress(WorkDoneProgress.type, token, value => {
        this.onValue(progressText(value));
        if (value.kind === 'end') {
          subscription.dispose();
        }
      });
    });
  }

  clear(): void {
    this.onValue(undefined);
  }
}

class GhostLanguageClient extends LanguageClient {
  public override registerFeature(feature: StaticFeature | DynamicFeature<unknown>): void {
    if (!(feature instanceof StatusProgressFeature)) {
      // The palette commands call the server's commands themselves: the built-in feature would
      // register `vllmGhost.restartModel` a second time, and only while a server runs.
      if ('registrationType' in feature && feature.registrationType.method === ExecuteCommandRequest.method) {
        return;
      }
      const state = feature.getState();
      if (state.kind === 'window' && state.id === WorkDoneProgressCreateRequest.method) {
        return; // replaced by StatusProgressFeature
      }
    }
    super.registerFeature(feature);
  }

  // Failures get one message of ours with the fix, not the library's generic pop-ups; it still logs.
  public override error(message: string, data?: unknown, _showNotification?: boolean | 'force'): void {
    super.error(message, data, false);
  }
}

/** The first-run install, as the manager needs it (src/install.ts). */
export interface Installer {
  wheel(): string | undefined;
  installedPython(): string | undefined;
  install(): Promise<boolean>;
}

export class ServerManager implements vscode.Disposable {
  private client: GhostLanguageClient | undefined;
  private queue: Promise<void> = Promise.resolve();
  private stderrTail: string[] = [];
  private crashes: number[] = [];
  private running = false;
  private readonly notified = new Set<string>();

  constructor(
    private readonly log: vscode.LogOutputChannel,
    private readonly statusBar: StatusBar,
    private readonly settingKeys: readonly string[],
    private readonly installer: Installer,
    private readonly allowed: (document: vscode.TextDocument) => boolean = () => true,
  ) {}

  /** Start, stop and restart run one at a time, in call order. */
  private serialize(task: () => Promise<void>): Promise<void> {
    this.queue = this.queue.then(task, task);
    return this.queue;
  }

  start(): Promise<void> {
    return this.serialize(() => this.doStart());
  }

  stop(timeoutMs = STOP_TIMEOUT_MS): Promise<void> {
    return this.serialize(() => this.doStop(timeoutMs));
  }

  restart(): Promise<void> {
    return this.serialize(async () => {
      logInfo('restarting the language server');
      await this.doStop(STOP_TIMEOUT_MS);
      await this.doStart();
    });
  }

  /** Ask the server to restart vLLM; the status bar follows its notifications. */
  async restartModel(): Promise<void> {
    const client = this.client;
    if (!client || client.state !== State.Running) {
      logInfo('Restart Model: the language server is not running; restarting it');
      return this.restart();
    }
    logInfo('asking the server to restart the model');
    try {
      const result = await client.sendRequest(ExecuteCommandRequest.type, { command: SERVER_RESTART_MODEL, arguments: [] });
      this.statusBar.setStatus(parseStatus(result));
    } catch (err) {
      logError(`Restart Model failed: ${errorText(err)}`);
      void vscode.window.showErrorMessage(`vLLM Ghost: Restart Model failed: ${errorText(err)}`);
    }
  }

  /** Stop Model (free the GPU, for every window sharing the vLLM) or Start Model. */
  async modelCommand(command: typeof SERVER_STOP_MODEL | typeof SERVER_START_MODEL): Promise<void> {
    const client = this.client;
    if (!client || client.state !== State.Running) {
      if (command === SERVER_START_MODEL) {
        logInfo('Start Model: the language server is not running; starting it');
        return this.restart();
      }
      logInfo('Stop Model: the language server is not running, so no model is loaded by it');
      return;
    }
    logInfo(command === SERVER_STOP_MODEL ? 'asking the server to stop the model' : 'asking the server to start the model');
    try {
      const result = await client.sendRequest(ExecuteCommandRequest.type, { command, arguments: [] });
      this.statusBar.setStatus(parseStatus(result));
    } catch (err) {
      logError(`${command} failed: ${errorText(err)}`);
      void vscode.window.showErrorMessage(`vLLM Ghost: ${command} failed: ${errorText(err)}`);
    }
  }

  /** An item was accepted (VS Code ran its command): the server counts it, locally. */
  async accepted(args: unknown[]): Promise<void> {
    const client = this.client;
    if (!client || client.state !== State.Running) {
      return;
    }
    try {
      const result = await client.sendRequest(ExecuteCommandRequest.type, { command: SERVER_ACCEPTED, arguments: args });
      this.statusBar.setStatus(parseStatus(result));
    } catch (err) {
      logError(`counting an acceptance failed: ${errorText(err)}`);
    }
  }

  /** Send the current `vllmGhost.*` settings (without `server.*`) to the running server. */
  sendSettings(): void {
    const client = this.client;
    if (!client || client.state !== State.Running) {
      return;
    }
    void client
      .sendNotification(DidChangeConfigurationNotification.type, { settings: this.serverSettings() })
      .catch(err => logError(`could not send settings: ${errorText(err)}`));
  }

  private serverSettings(): ReturnType<typeof toServerSettings> {
    const config = vscode.workspace.getConfiguration(SECTION);
    return toServerSettings(key => config.get(key), this.settingKeys);
  }

  private async resolveCommand(): Promise<ServerCommand | undefined> {
    const configured = vscode.workspace.getConfiguration(SECTION).get<unknown>('server.command');
    const explicit = Array.isArray(configured) && configured.length > 0;
    const installed = explicit ? undefined : this.installer.installedPython();
    const interpreter = explicit || installed || which('vllm-ghost') ? undefined : await selectedInterpreter();
    return resolveServerCommand(configured, { which, interpreter, installed });
  }

  private async doStart(): Promise<void> {
    this.running = false;
    this.stderrTail = [];
    this.statusBar.setStatus({ state: 'starting', message: 'Starting the language server', detail: {} });
    const command = await this.resolveCommand();
    if (!command) {
      this.fail('no language server found (vllm-ghost is not on PATH and no Python interpreter is selected).', undefined);
      return;
    }
    if (!isRunnable(command.command)) {
      this.fail(`the server command ${describeCommand(command)} cannot be run (${command.command} not found).`, command);
      return;
    }
    logInfo(`starting the language server (${command.source}): ${describeCommand(command)}`);
    const serverOptions: ServerOptions = {
      command: command.command,
      args: command.args,
      // No `transport`: with TransportKind.stdio the library appends `--stdio` to the argv.
      options: { env: { ...process.env, PYTHONUNBUFFERED: '1' } },
    };
    const clientOptions: LanguageClientOptions = {
      documentSelector: [{ scheme: 'file' }, { scheme: 'untitled' }],
      initializationOptions: this.serverSettings(),
      outputChannel: this.log,
      initializationFailedHandler: () => false,
      middleware: {
        provideInlineCompletionItems: (document, position, context, token, next) =>
          this.allowed(document) ? next(document, position, context, token) : null,
      },
      errorHandler: {
        error: (_error, _message, count): ErrorHandlerResult => ({
          action: (count ?? 0) <= 3 ? ErrorAction.Continue : ErrorAction.Shutdown,
          handled: true,
        }),
        closed: (): CloseHandlerResult => this.onClosed(),
      },
      stdioOptions: {
        stdout: (input, channel) => this.pipe(input, line => channel.info(line)),
        stderr: (input, channel) =>
          this.pipe(input, line => {
            channel.warn(`[server stderr] ${line}`);
            this.stderrTail.push(line);
            this.stderrTail.splice(0, Math.max(0, this.stderrTail.length - 20));
          }),
      },
    };
    const client = new GhostLanguageClient('vllmGhost', 'vLLM Ghost', serverOptions, clientOptions);
    client.registerFeature(new StatusProgressFeature(client, text => this.statusBar.setProgress(text)));
    this.client = client;
    client.onNotification(STATUS_NOTIFICATION, raw => this.statusBar.setStatus(parseStatus(raw)));
    client.onDidChangeState(event => {
      if (event.newState === State.Running) {
        this.onRunning(client);
      }
    });
    try {
      await client.start();
      // start() can resolve although the server exited during initialize (the library clears
      // its start promise when the connection closes): check the state.
      if (client.state !== State.Running) {
        throw new Error('the server exited during initialization');
      }
    } catch (err) {
      if (this.client === client) {
        this.client = undefined;
      }
      const why = this.stderrTail.at(-1) ?? errorText(err);
      this.fail(`the server command ${describeCommand(command)} failed at start: ${why}`, command);
      // A client whose start failed may never settle its stop: do not wait for it.
      void client.dispose(2000).catch(() => undefined);
    }
  }

  /** After every (re)start: a fresh status.  */
  private onRunning(client: GhostLanguageClient): void {
    this.running = true;
    this.notified.clear();
    client
      .sendRequest(ExecuteCommandRequest.type, { command: SERVER_STATUS, arguments: [] })
      .then(result => {
        if (this.client === client) {
          this.statusBar.setStatus(parseStatus(result));
        }
      })
      .catch(err => logError(`status request failed: ${errorText(err)}`));
  }

  private onClosed(): CloseHandlerResult {
    if (!this.running) {
      // Never got going: start() rejects and reports.
      return { action: CloseAction.DoNotRestart, handled: true };
    }
    this.running = false;
    const now = Date.now();
    this.crashes = [...this.crashes.filter(time => now - time < CRASH_WINDOW_MS), now];
    const tail = this.stderrTail.slice(-3).join(' | ');
    if (this.crashes.length > MAX_CRASHES) {
      this.fail(`the language server crashed ${this.crashes.length} times in 3 minutes: ${this.stderrTail.at(-1) ?? 'no output'}`);
      return { action: CloseAction.DoNotRestart, handled: true };
    }
    logError(`the language server exited; restarting it${tail ? ' (last output: ' + tail + ')' : ''}`);
    this.statusBar.setStatus({ state: 'starting', message: 'The language server exited; restarting it', detail: {} });
    return { action: CloseAction.Restart, handled: true };
  }

  /** `command`: what failed to start (undefined: none found; a crash passes none either). */
  private fail(reason: string, command?: ServerCommand): void {
    logError(reason);
    this.statusBar.setStatus({ state: 'error', message: reason, detail: { lastLines: this.stderrTail.slice(-5) } });
    // No server here and none configured: offer the one this VSIX carries. A configured command
    // that fails keeps the message pointing at the setting (the user chose it).
    if (command?.source !== 'setting' && this.installer.wheel() && serverMissing(reason, this.stderrTail)) {
      this.offerInstall(reason);
      return;
    }
    const message = missingServerMessage(reason);
    if (this.notified.has(message)) {
      return;
    }
    this.notified.add(message);
    void vscode.window.showErrorMessage(message, 'Open Setting', 'Show Log').then(choice => {
      if (choice === 'Open Setting') {
        // The setting is machine-overridable: in a remote window it lives in the remote's settings.
        const command = vscode.env.remoteName ? 'workbench.action.openRemoteSettings' : 'workbench.action.openSettings';
        void vscode.commands.executeCommand(command, { query: `${SECTION}.server.command` });
      } else if (choice === 'Show Log') {
        this.log.show(true);
      }
    });
  }

  private offerInstall(reason: string): void {
    const message = installOfferMessage(reason);
    if (this.notified.has(message)) {
      return;
    }
    this.notified.add(message);
    void vscode.window.showErrorMessage(message, INSTALL_ACTION, 'Show Log').then(async choice => {
      if (choice === INSTALL_ACTION) {
        this.notified.delete(message);
        if (await this.installer.install()) {
          await this.restart();
        }
      } else if (choice === 'Show Log') {
        this.log.show(true);
      }
    });
  }

  private pipe(input: NodeJS.ReadableStream, onLine: (line: string) => void): void {
    readline.createInterface({ input, crlfDelay: Infinity, terminal: false }).on('line', onLine);
  }

  private async doStop(timeoutMs: number): Promise<void> {
    const client = this.client;
    this.client = undefined;
    this.running = false;
    if (!client) {
      return;
    }
    try {
      await client.dispose(timeoutMs);
    } catch (err) {
      logError(`stopping the language server: ${errorText(err)}`);
    }
    this.statusBar.setStatus({ state: 'stopped', message: 'Language server stopped', detail: {} });
  }

  dispose(): void {
    void this.stop(4000);
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
