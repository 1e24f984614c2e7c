// Finding the language server: PATH look-up and the Python extension's selected interpreter.
import * as fs from 'fs';
import * as path from 'path';
import * as vscode from 'vscode';
import { logInfo, logWarn } from './log';

const PYTHON_EXTENSION = 'ms-python.python';

/** Absolute path of an executable on PATH (PATHEXT on Windows), or undefined. */
export function which(name: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const dirs = (env.PATH ?? env.Path ?? '').split(path.delimiter).filter(Boolean);
  const exts = process.platform === 'win32' ? (env.PATHEXT ?? '.EXE;.CMD;.BAT').split(';') : [''];
  for (const dir of dirs) {
    for (const ext of exts) {
      const candidate = path.join(dir, name + ext);
      try {
        fs.accessSync(candidate, fs.constants.X_OK);
        if (fs.statSync(candidate).isFile()) {
          return candidate;
        }
      } catch {
        // not here
      }
    }
  }
  return undefined;
}

/** Whether argv[0] can be run: an existing executable file, or a name found on PATH. */
export function isRunnable(command: string): boolean {
  if (command.includes('/') || command.includes('\\')) {
    try {
      fs.accessSync(command, fs.constants.X_OK);
      return fs.statSync(command).isFile();
    } catch {
      return false;
    }
  }
  return which(command) !== undefined;
}

interface PythonEnvironmentsApi {
  getActiveEnvironmentPath(resource?: vscode.Uri): { path: string } | undefined;
  resolveEnvironment(environment: { path: string } | string): Promise<{ executable: { uri?: vscode.Uri } } | undefined>;
  onDidChangeActiveEnvironmentPath?: vscode.Event<unknown>;
}

async function pythonApi(): Promise<PythonEnvironmentsApi | undefined> {
  const extension = vscode.extensions.getExtension<{ environments?: PythonEnvironmentsApi }>(PYTHON_EXTENSION);
  if (!extension) {
    return undefined;
  }
  try {
    const exports = extension.isActive ? extension.exports : await extension.activate();
    return exports?.environments;
  } catch (err) {
    logWarn(`Python extension did not activate: ${String(err)}`);
    return undefined;
  }
}

/** The interpreter selected in the Python extension, if it is installed. */
export async function selectedInterpreter(): Promise<string | undefined> {
  const api = await pythonApi();
  if (!api) {
    return undefined;
  }
  try {
    const active = api.getActiveEnvironmentPath(vscode.workspace.workspaceFolders?.[0]?.uri);
    if (!active) {
      return undefined;
    }
    const resolved = await api.resolveEnvironment(active);
    const executable = resolved?.executable.uri?.fsPath;
    if (executable) {
      logInfo(`Python extension's interpreter: ${executable}`);
    }
    return executable;
  } catch (err) {
    logWarn(`could not ask the Python extension for its interpreter: ${String(err)}`);
    return undefined;
  }
}

/** Fires when the user picks another interpreter in the Python extension. */
export async function onInterpreterChange(listener: () => void): Promise<vscode.Disposable | undefined> {
  const api = await pythonApi();
  return api?.onDidChangeActiveEnvironmentPath?.(() => listener());
}
