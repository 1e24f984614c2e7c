// The extension's log: one LogOutputChannel ("vLLM Ghost") for the client's own lines, the
// server's window/logMessage and its stderr.
import * as vscode from 'vscode';

let channel: vscode.LogOutputChannel | undefined;

export function createLog(): vscode.LogOutputChannel {
  channel = vscode.window.createOutputChannel('vLLM Ghost', { log: true });
  return channel;
}

export function logInfo(message: string): void {
  channel?.info(message);
}

export function logWarn(message: string): void {
  channel?.warn(message);
}

export function logError(message: string): void {
  channel?.error(message);
}

export function showLog(): void {
  channel?.show(true);
}
