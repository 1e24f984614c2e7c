// The packaging checks a registry runs on a VSIX before upload, offline (no registry token here):
//   vsce (the one that packaged it): the packaged package.json passes validateManifestForPackaging,
//     extension.vsixmanifest is present (readVSIXPackage), and the publishing rules on the manifest
//     (publisher and name valid, no proposed API, no pre-release version);
//   ovsx (Open VSX's CLI): its own reading of the VSIX (readVSIXPackage), validateManifest, the licence
//     rule (isLicenseOk: Open VSX refuses unlicensed extensions), and the vsce it bundles (another major
//     version) reading and validating the package again;
//   platform-neutral: no TargetPlatform in the VSIX manifest.
// Run by scripts/build-release:  node check-vsix.mjs <vsix> <vscode-client dir> <release-tools dir>
// Prints one JSON line (the versions of the checkers, the VSIX's file list); exits 1 on a failed check.
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const [vsix, clientDir, toolsDir] = process.argv.slice(2).map(arg => path.resolve(arg));
const fromClient = createRequire(path.join(clientDir, 'package.json'));
const fromTools = createRequire(path.join(toolsDir, 'package.json'));
const problems = [];
const check = async (name, fn) => {
  try {
    await fn();
  } catch (err) {
    problems.push(`${name}: ${err && err.message ? err.message : err}`);
  }
};

const vsceZip = fromClient('@vscode/vsce/out/zip.js');
const vsceValidation = fromClient('@vscode/vsce/out/validation.js');
const ovsx = fromTools('ovsx');
const ovsxZip = fromTools('ovsx/lib/zip.js');
const ovsxRequire = createRequire(fromTools.resolve('ovsx/package.json'));
const ovsxVsceZip = ovsxRequire('@vscode/vsce/out/zip.js');

let manifest;
let xmlManifest;
await check('vsce readVSIXPackage', async () => {
  ({ manifest, xmlManifest } = await vsceZip.readVSIXPackage(vsix));
});
await check('vsce publishing rules', async () => {
  vsceValidation.validatePublisher(manifest.publisher);
  vsceValidation.validateExtensionName(manifest.name);
  vsceValidation.validateVersion(manifest.version);
  vsceValidation.validateEngineCompatibility(manifest.engines.vscode);
  if (manifest.enableProposedApi || manifest.enabledApiProposals) {
    throw new Error('uses proposed API: the Marketplace refuses it');
  }
  if (/-/.test(manifest.version)) {
    throw new Error(`pre-release version ${manifest.version}: the Marketplace refuses it`);
  }
});
await check('platform-neutral', async () => {
  const target = xmlManifest?.PackageManifest?.Metadata?.[0]?.Identity?.[0]?.$?.TargetPlatform;
  if (target) {
    throw new Error(`built for ${target} only`);
  }
});
let ovsxManifest;
await check('ovsx readVSIXPackage', async () => {
  ovsxManifest = await ovsxZip.readVSIXPackage(vsix);
  ovsx.validateManifest(ovsxManifest);
});
await check('ovsx licence', async () => {
  // isLicenseOk looks at a directory: the packaged manifest alone, as the registry sees it.
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vsix-check-'));
  try {
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, 'package.json'), JSON.stringify(ovsxManifest));
    if (!(await ovsx.isLicenseOk(dir, ovsxManifest))) {
      throw new Error('no licence: Open VSX refuses unlicensed extensions (set "license" in package.json)');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
await check("ovsx's vsce readVSIXPackage", async () => {
  await ovsxVsceZip.readVSIXPackage(vsix);
});

const files = [...(await vsceZip.readZip(vsix, () => true)).keys()].sort();
const result = {
  ok: problems.length === 0,
  problems,
  vsce: fromClient('@vscode/vsce/package.json').version,
  ovsx: fromTools('ovsx/package.json').version,
  ovsxVsce: ovsxRequire('@vscode/vsce/package.json').version,
  name: manifest ? `${manifest.publisher}.${manifest.name}@${manifest.version}` : undefined,
  files,
};
process.stdout.write(JSON.stringify(result) + '\n');
process.exit(result.ok ? 0 : 1);
