import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  bundledWheel,
  installFailedMessage,
  installOfferMessage,
  pipInstallArgs,
  serverMissing,
  venvPython,
  wheelVersion,
} from '../common/installPlan';
import { resolveServerCommand } from '../common/settings';

describe('first-run install plan', () => {
  it('finds the bundled wheel and its version', () => {
    const names = ['README.md', 'vllm_ghost-0.1.0-py3-none-any.whl', 'other-1.0-py3-none-any.whl'];
    assert.equal(bundledWheel(names), 'vllm_ghost-0.1.0-py3-none-any.whl');
    assert.equal(bundledWheel(['vllm_ghost-0.1.0.tar.gz']), undefined);
    assert.equal(wheelVersion('/x/server/vllm_ghost-0.2.1-py3-none-any.whl'), '0.2.1');
  });

  it('asks pip for the [gpu] extra only on request', () => {
    assert.equal(pipInstallArgs('/w/vllm_ghost-0.1.0-py3-none-any.whl', false).at(-1), '/w/vllm_ghost-0.1.0-py3-none-any.whl');
    assert.equal(pipInstallArgs('/w/vllm_ghost-0.1.0-py3-none-any.whl', true).at(-1), '/w/vllm_ghost-0.1.0-py3-none-any.whl[gpu]');
    assert.deepEqual(pipInstallArgs('w', false).slice(0, 3), ['-m', 'pip', 'install']);
  });

  it('puts the venv python where venv does', () => {
    assert.equal(venvPython('/s/server-venv', 'linux'), '/s/server-venv/bin/python');
    assert.ok(venvPython('C:\\s\\server-venv', 'win32').endsWith('python.exe'));
  });

  it('offers the install when no server is there, not when a server crashed', () => {
    assert.ok(serverMissing('no language server found (vllm-ghost is not on PATH and no Python interpreter is selected).', []));
    assert.ok(serverMissing('the server command /usr/bin/python3 -m langserver failed at start: x', ["/usr/bin/python3: No module named langserver"]));
    assert.ok(!serverMissing('the server command python -m langserver failed at start: Traceback', ['ValueError: boom']));
    assert.match(installOfferMessage('no language server found'), /Install the language server that comes with this extension/);
  });

  it("says which step failed with pip's last lines", () => {
    const message = installFailedMessage('pip install', 1, ['Processing /x.whl', '', 'ERROR: Wheel is invalid.', '[notice] A new release of pip']);
    assert.equal(message, "vLLM Ghost: installing the server failed (pip install exited with 1): Processing /x.whl | ERROR: Wheel is invalid.");
    assert.match(installFailedMessage('pip install', null, []), /was stopped\)\.$/);
  });

  it('prefers a configured command, then the installed server, then PATH', () => {
    const which = (name: string): string | undefined => (name === 'vllm-ghost' ? '/usr/bin/vllm-ghost' : undefined);
    const installed = '/g/server-venv/bin/python';
    assert.equal(resolveServerCommand(['/p/python', '-m', 'langserver'], { which, installed })?.source, 'setting');
    assert.deepEqual(resolveServerCommand([], { which, installed }), { command: installed, args: ['-m', 'langserver'], source: 'installed' });
    assert.equal(resolveServerCommand([], { which })?.source, 'path');
  });
});
