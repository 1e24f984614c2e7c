// First run without a server, in code-server driven by Debian's Chromium (playwright-core). Run by
// tests/editors_e2e/test_vscode_first_run.py, which installs the release VSIX (it carries the server's wheel) with
// no server configured and none on PATH, and asserts on the JSON this prints last:
//   node first_run.mjs <config.json>
// config: {url, folder, fileName, line, column, typed, expected, wheel, artifacts, readyTimeoutMs,
//          ghostTimeoutMs, installTimeoutMs, toolsDir, chromium}
// The scenario: the install offer appears; the first install meets a broken wheel (pip fails: the
// message must carry pip's last lines); the wheel is restored and Retry installs it, with pip's lines
// as progress; the server starts from the new venv and reaches ready; ghost text at the memorised
// spot; Restart Server starts it from the venv again.
import { createRequire } from 'node:module';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const require = createRequire(path.join(config.toolsDir, 'package.json'));
const { chromium } = require('playwright-core');

const STATUS = '.statusbar [id="vllm-ghost.vllm-ghost.vllmGhost.status"]';
const GHOST = '.monaco-editor .ghost-text-decoration, .monaco-editor .ghost-text-decoration-preview, .monaco-editor .ghost-text';
const TOASTS = '.notifications-toasts .notification-toast';
const result = { events: {}, states: [], progress: [], log: [] };
const t0 = Date.now();
function note(line) {
  result.log.push(line);
  process.stderr.write(`[first-run] ${line}\n`);
}
const mark = name => {
  result.events[name] = Date.now();
  note(`${name} at ${((Date.now() - t0) / 1000).toFixed(1)} s`);
};

const browser = await chromium.launch({
  executablePath: config.chromium,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
page.on('pageerror', err => note(`page error: ${err.message}`));
const shot = name => page.screenshot({ path: path.join(config.artifacts, `${name}.png`) }).catch(() => undefined);

async function stateLabel() {
  return page.locator(STATUS).first().getAttribute('aria-label', { timeout: 1000 }).catch(() => undefined);
}

/** Until the status bar says ready, recording each state and the install's progress messages. */
async function waitReady(timeout) {
  const deadline = Date.now() + timeout;
  let last;
  while (Date.now() < deadline) {
    const label = await stateLabel();
    if (label && label !== last) {
      last = label;
      result.states.push({ at: Date.now(), label });
      note(`status: ${label}`);
    }
    if (label === 'vLLM Ghost: ready') {
      return;
    }
    const progress = page.locator(TOASTS, { hasText: 'installing the server' });
    for (const text of await progress.allInnerTexts().catch(() => [])) {
      const line = text.replace(/\s+/g, ' ').trim();
      if (result.progress.at(-1) !== line) {
        result.progress.push(line);
        note(`progress: ${line}`);
      }
    }
    await page.waitForTimeout(200);
  }
  throw new Error(`status bar not ready after ${timeout} ms (last: ${last})`);
}

async function toast(text, timeout) {
  const found = page.locator(TOASTS, { hasText: text }).first();
  await found.waitFor({ state: 'visible', timeout });
  return found;
}

async function pickInQuickPick(text) {
  const row = page.locator('.quick-input-widget .monaco-list-row', { hasText: text }).first();
  await row.waitFor({ state: 'visible', timeout: 20000 });
  await row.click();
}

try {
  await page.goto(`${config.url}/?folder=${encodeURIComponent(config.folder)}`);
  await page.locator('.monaco-workbench').waitFor({ timeout: 60000 });
  mark('workbench');
  await page.locator('.monaco-workbench').click({ position: { x: 640, y: 300 } }).catch(() => undefined);
  await page.keyboard.press('Control+P');
  const quick = page.locator('.quick-input-widget input');
  await quick.waitFor({ state: 'visible', timeout: 20000 });
  await quick.fill(config.fileName);
  await page.locator('.quick-input-widget .monaco-list-row', { hasText: config.fileName }).first().waitFor({ timeout: 20000 });
  await page.keyboard.press('Enter');
  await page.locator('.editor-instance .monaco-editor .view-lines').first().waitFor({ timeout: 20000 });
  mark('fileOpen');

  // No server anywhere: one notification offering the bundled one.
  const offer = await toast('Install vLLM Ghost server', 60000);
  mark('offer');
  result.offer = (await offer.innerText()).replace(/\s+/g, ' ');
  result.offerCount = await page.locator(TOASTS, { hasText: 'Install vLLM Ghost server' }).count();
  result.offerState = await stateLabel();
  await shot('first-run-offer');

  // First attempt with a broken wheel: pip fails, the message carries its last lines.
  copyFileSync(config.wheel, config.wheel + '.good');
  writeFileSync(config.wheel, 'not a wheel');
  await offer.locator('.monaco-button', { hasText: 'Install vLLM Ghost server' }).first().click();
  await pickInQuickPick('Language server only');
  mark('installStarted');
  const failed = await toast('installing the server failed', config.installTimeoutMs);
  mark('installFailed');
  result.failure = (await failed.innerText()).replace(/\s+/g, ' ');
  await shot('first-run-pip-failed');

  // Retry with the real wheel: progress, then the server from the new venv.
  copyFileSync(config.wheel + '.good', config.wheel);
  await failed.locator('.monaco-button', { hasText: 'Retry' }).first().click();
  mark('retry');
  await waitReady(config.installTimeoutMs + config.readyTimeoutMs);
  mark('ready');
  await shot('first-run-ready');

  // Ghost text from the installed server.
  await page.keyboard.press('Escape');
  await page.keyboard.press('Control+1');
  await page.keyboard.press('Control+G');
  const input = page.locator('.quick-input-widget input');
  await input.waitFor({ state: 'visible', timeout: 10000 });
  await input.fill(`:${config.line}:${config.column}`);
  await page.keyboard.press('Enter');
  await page.locator('.quick-input-widget').waitFor({ state: 'hidden', timeout: 10000 });
  const started = Date.now();
  await page.keyboard.type(config.typed);
  let seen = '';
  while (Date.now() - started < config.ghostTimeoutMs) {
    seen = (await page.locator(GHOST).allTextContents()).join('').replace(/\u00a0/g, ' ');
    if (seen === config.expected) {
      break;
    }
    await page.waitForTimeout(100);
  }
  result.ghost = seen;
  note(`ghost text after ${Date.now() - started} ms: ${JSON.stringify(seen)}`);
  await shot('first-run-ghost-text');

  // Restart Server: it comes back from the venv (the extension remembers the install).
  await page.keyboard.press('Escape');
  await page.keyboard.press('F1');
  await input.waitFor({ state: 'visible', timeout: 10000 });
  await input.fill('>vLLM Ghost: Restart Server');
  await page.locator('.quick-input-widget .monaco-list-row', { hasText: 'Restart Server' }).first().waitFor({ timeout: 10000 });
  await page.keyboard.press('Enter');
  mark('restartServer');
  const deadline = Date.now() + 30000;
  while ((await stateLabel()) === 'vLLM Ghost: ready' && Date.now() < deadline) {
    await page.waitForTimeout(100);
  }
  await waitReady(config.readyTimeoutMs);
  mark('readyAfterRestart');
  result.ok = true;
} catch (err) {
  result.ok = false;
  result.error = String(err && err.stack ? err.stack : err);
  note(`FAILED: ${result.error}`);
  await shot('first-run-failure');
} finally {
  await browser.close();
  process.stdout.write(JSON.stringify(result) + '\n');
}
