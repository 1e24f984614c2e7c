// First run without a server: a venv in the extension's global storage, the wheel the VSIX carries
// pip-installed into it (plus vLLM with `[gpu]` on request), with pip's lines as progress. The server
// then starts from that venv, this time and every time after (see ServerManager.resolveCommand).
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as vscode from 'vscode';
import { logError, logInfo, showLog } from './common/log';
import {
  InstallMarker,
  MARKER,
  VENV_DIR,
  bundledWheel,
  installFailedMessage,
  pipInstallArgs,
  progressLine,
  venvPython,
  wheelVersion,
} from './common/installPlan';
import { selectedInterpreter, which } from './common/python';

const MIN_PYTHON = [3, 10];

class StepFailed extends Error {
  constructor(
    readonly step: string,
    readonly code: number | null,
    readonly lines: string[],
  ) {
    super(installFailedMessage(step, code, lines));
  }
}

export class ServerInstaller {
  private running: Promise<boolean> | undefined;

  constructor(private readonly context: vscode.ExtensionContext) {}

  private get venv(): string {
    return path.join(this.context.globalStorageUri.fsPath, VENV_DIR);
  }

  /** The wheel inside this extension, if the VSIX carries one (scripts/build-release's does). */
  wheel(): string | undefined {
    const dir = path.join(this.context.extensionPath, 'server');
    let names: string[] = [];
    try {
      names = fs.readdirSync(dir);
    } catch {
      return undefined;
    }
    const name = bundledWheel(names);
    return name ? path.join(dir, name) : undefined;
  }

  /** The venv's python when an install finished there, else undefined. */
  installedPython(): string | undefined {
    const python = venvPython(this.venv);
    try {
      const marker = JSON.parse(fs.readFileSync(path.join(this.venv, MARKER), 'utf8')) as InstallMarker;
      fs.accessSync(python, fs.constants.X_OK);
      const bundled = this.wheel();
      const newer = bundled ? wheelVersion(bundled) : undefined;
      if (newer && newer !== marker.version) {
        logInfo(`the installed server is ${marker.version}, this extension carries ${newer}: run "vLLM Ghost: Install Server" to update it`);
      }
      return python;
    } catch {
      return undefined;
    }
  }

  /** Ask which install, then run it; one at a time. Resolves true when the server is installed. */
  install(gpu?: boolean): Promise<boolean> {
    this.running ??= this.askAndRun(gpu).finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async askAndRun(gpu: boolean | undefined): Promise<boolean> {
    const wheel = this.wheel();
    if (!wheel) {
      void vscode.window.showErrorMessage(
        'vLLM Ghost: this build of the extension carries no server to install. Fix: pip install vllm_ghost-<version>-py3-none-any.whl (the wheel file of the release), then set vllmGhost.server.command; or install the release\'s VSIX, which carries it.',
      );
      return false;
    }
    if (gpu === undefined) {
      const picked = await vscode.window.showQuickPick(
        [
          {
            label: 'Language server only',
            description: 'seconds',
            detail: 'You run vLLM yourself (external mode) or it is installed already (vllmGhost.vllm.command).',
            gpu: false,
          },
          {
            label: 'Language server and vLLM for NVIDIA GPUs',
            description: 'several GB',
            detail: 'The server this extension carries with its [gpu] extra: vLLM and a CUDA build of PyTorch (from PyPI).',
            gpu: true,
          },
        ],
        { title: 'Install the vLLM Ghost server', placeHolder: 'What to install into a Python environment of its own' },
      );
      if (!picked) {
        return false;
      }
      gpu = picked.gpu;
    }
    return this.run(wheel, gpu);
  }

  private async run(wheel: string, gpu: boolean): Promise<boolean> {
    const venv = this.venv;
    const lines: string[] = [];
    // An installed server is upgraded in place: if pip fails there, it keeps what it had (pip
    // rolls back), so the old server still starts. A fresh venv that failed is removed.
    const upgrade = this.installedPython() !== undefined;
    try {
      await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: 'vLLM Ghost: installing the server', cancellable: true },
        async (progress, token) => {
          const say = (message: string): void => progress.report({ message });
          say(upgrade ? 'updating the installed server' : 'finding Python 3.10 or newer');
          const python = upgrade ? venvPython(venv) : await findPython();
          if (!python) {
            throw new StepFailed('finding Python', 1, [
              'No Python 3.10 or newer found (python3 or python on PATH, or the Python extension\'s interpreter). Install Python, then retry.',
            ]);
          }
          if (!upgrade) {
            await fs.promises.rm(venv, { recursive: true, force: true });
            await fs.promises.mkdir(path.dirname(venv), { recursive: true });
            say(`creating a Python environment (${python})`);
            await runStep('python -m venv', python, ['-m', 'venv', venv], lines, say, token);
          }
          say(gpu ? 'installing the server with vLLM and PyTorch (several GB)' : 'installing the server');
          await runStep('pip install', venvPython(venv), pipInstallArgs(wheel, gpu), lines, say, token);
          const marker: InstallMarker = {
            version: wheelVersion(wheel) ?? '?',
            wheel: path.basename(wheel),
            gpu,
            python,
            at: new Date().toISOString(),
          };
          await fs.promises.writeFile(path.join(venv, MARKER), JSON.stringify(marker, null, 2));
        },
      );
    } catch (err) {
      if (!upgrade) {
        // A half-made venv must not pass for an installed server.
        await fs.promises.rm(venv, { recursive: true, force: true }).catch(() => undefined);
      }
      const message = err instanceof Error ? err.message : String(err);
      logError(message);
      void vscode.window.showErrorMessage(message, 'Retry', 'Show Log').then(choice => {
        if (choice === 'Retry') {
          void this.install(gpu).then(ok => ok && vscode.commands.executeCommand('vllmGhost.restartServer'));
        } else if (choice === 'Show Log') {
          showLog();
        }
      });
      return false;
    }
    logInfo(`installed the vLLM Ghost server${gpu ? ' with vLLM' : ''} into ${venv}`);
    return true;
  }
}

/** Runs one step, every output line to the log and the progress; rejects with its last lines. */
function runStep(
  step: string,
  command: string,
  args: string[],
  lines: string[],
  say: (message: string) => void,
  token: vscode.CancellationToken,
): Promise<void> {
  logInfo(`install: ${command} ${args.join(' ')}`);
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: { ...process.env, PYTHONUNBUFFERED: '1' } });
    const cancel = token.onCancellationRequested(() => child.kill());
    let partial = '';
    const onData = (chunk: Buffer): void => {
      const text = partial + chunk.toString('utf8');
      const parts = text.split(/\r?\n/);
      partial = parts.pop() ?? '';
      for (const line of parts) {
        lines.push(line);
        lines.splice(0, Math.max(0, lines.length - 200));
        logInfo(`[${step}] ${line}`);
        const shown = progressLine(line);
        if (shown) {
          say(shown);
        }
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', err => {
      cancel.dispose();
      reject(new StepFailed(step, 1, [...lines, String(err)]));
    });
    child.on('close', code => {
      cancel.dispose();
      if (partial) {
        lines.push(partial);
      }
      if (code === 0) {
        resolve();
      } else {
        reject(new StepFailed(step, token.isCancellationRequested ? null : code, lines));
      }
    });
  });
}

/** The first of the Python extension's interpreter, python3, python that is 3.10 or newer. */
async function findPython(): Promise<string | undefined> {
  const candidates = [await selectedInterpreter(), which('python3'), which('python')].filter(
    (candidate): candidate is string => !!candidate,
  );
  for (const candidate of candidates) {
    const ok = await new Promise<boolean>(resolve => {
      const check = `import sys; sys.exit(0 if sys.version_info[:2] >= (${MIN_PYTHON.join(', ')}) else 1)`;
      const child = spawn(candidate, ['-c', check], { stdio: 'ignore' });
      child.on('error', () => resolve(false));
      child.on('close', code => resolve(code === 0));
    });
    if (ok) {
      return candidate;
    }
    logInfo(`install: ${candidate} is not Python ${MIN_PYTHON.join('.')}+ (or does not run)`);
  }
  return undefined;
}
