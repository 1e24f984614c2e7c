// The first-run install, the parts without `vscode` (node's test runner covers them): where the
// venv lives, what pip is asked, when to offer the install, what to say when pip fails.
import * as path from 'path';

/** Below the extension's global storage. */
export const VENV_DIR = 'server-venv';
/** Written into the venv once pip succeeded: a venv without it is a failed or interrupted install. */
export const MARKER = 'vllm-ghost-installed.json';
export const INSTALL_ACTION = 'Install vLLM Ghost server';

export interface InstallMarker {
  version: string;
  wheel: string;
  gpu: boolean;
  python: string;
  at: string;
}

export function venvPython(venv: string, platform: NodeJS.Platform = process.platform): string {
  return platform === 'win32' ? path.join(venv, 'Scripts', 'python.exe') : path.join(venv, 'bin', 'python');
}

/** The wheel the VSIX carries (`server/vllm_ghost-<version>-py3-none-any.whl`), newest first if several. */
export function bundledWheel(names: readonly string[]): string | undefined {
  return names
    .filter(name => /^vllm_ghost-[^-]+-py3-none-any\.whl$/.test(name))
    .sort()
    .at(-1);
}

export function wheelVersion(wheel: string): string | undefined {
  return /^vllm_ghost-([^-]+)-/.exec(path.basename(wheel))?.[1];
}

/** pip's argv after the venv's python. `[gpu]` adds vLLM (and its CUDA torch: gigabytes). */
export function pipInstallArgs(wheel: string, gpu: boolean): string[] {
  return ['-m', 'pip', 'install', '--disable-pip-version-check', '--progress-bar', 'off', gpu ? `${wheel}[gpu]` : wheel];
}

/**
 * Whether a start failure means "no language server here" (the install would fix it), not a server
 * that crashed: no command found, or a Python without the `langserver` module.
 */
export function serverMissing(reason: string, stderrTail: readonly string[]): boolean {
  if (/no language server found|cannot be run/.test(reason)) {
    return true;
  }
  return [reason, ...stderrTail].some(line => /No module named '?langserver'?/.test(line));
}

/** The offer: the cause, then what the button does and the manual way. */
export function installOfferMessage(reason: string): string {
  const cause = /[.!?:)]$/.test(reason.trim()) ? reason.trim() : reason.trim() + '.';
  return (
    `vLLM Ghost: ${cause} Install the language server that comes with this extension (a Python environment ` +
    "in VS Code's storage), or pip install vllm_ghost-<version>-py3-none-any.whl (the wheel file of the release) and set vllmGhost.server.command."
  );
}

/** The last lines of pip's output worth showing: non-empty, no progress noise. */
export function lastLines(lines: readonly string[], count = 3): string[] {
  return lines
    .map(line => line.trim())
    .filter(line => line !== '' && !/^\[notice\]/.test(line))
    .slice(-count);
}

export function installFailedMessage(step: string, code: number | null, lines: readonly string[]): string {
  const how = code === null ? 'was stopped' : `exited with ${code}`;
  const tail = lastLines(lines);
  return `vLLM Ghost: installing the server failed (${step} ${how})${tail.length ? ': ' + tail.join(' | ') : '.'}`;
}

/** The progress line for one line of pip output (what it is doing now), or undefined to keep the last. */
export function progressLine(line: string): string | undefined {
  const text = line.trim();
  if (!text || /^\[notice\]/.test(text)) {
    return undefined;
  }
  return text.length > 100 ? text.slice(0, 97) + '...' : text;
}
