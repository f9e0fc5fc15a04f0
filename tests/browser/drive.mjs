// Drives headless Chromium through livecheck's capture page for tests/browser.rs, which starts
// the server, creates the sessions, makes the camera clips and checks what this script reports.
//
//   node tests/browser/drive.mjs CONFIG.json
//
// CONFIG: {"chromium": PATH, "out": DIR, "scenarios": [{
//   "name", "url",
//   "clip": Y4M file the fake camera plays (absent: no camera clip),
//   "camera": "grant" | "deny",
//   "viewport": {"width", "height"}, "mobile": bool,
//   "upload": file to choose in the upload fallback (with "camera": "deny"),
//   "waitForUrl": a URL prefix the page must end on (the session's redirect),
//   "keyboard": take the photo with Tab and Enter instead of a click,
//   "axe": run axe-core's WCAG 2.1 AA rules on each screen,
//   "reducedMotion": the browser asks for reduced motion
// }]}
//
// Prints one JSON object: {"scenarios": [{name, screens: [...], outcome, title, detail,
// status, cameraError, widgetResult, finalUrl, requests, cspViolations, pageErrors,
// overflow: [{screen, scrollWidth, innerWidth}], screenshots: [...], keyboard,
// accessibility: [{screen, violations: [{id, impact, help, targets}]}]}]}. It asserts nothing itself
// beyond reaching each step (a step that never comes fails with its name).
import { chromium } from 'playwright-core';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const STEP_MS = 45000;

async function layout(page, screen, report) {
  const m = await page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth
  }));
  report.overflow.push({ screen, ...m });
}

// axe-core's WCAG 2.1 A and AA rules on the page as it is now (evaluated through the DevTools
// protocol, which the page's CSP does not govern).
async function audit(page, screen, report) {
  await page.evaluate(AXE);
  const violations = await page.evaluate(() => window.axe.run(document, {
    runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] }
  }).then((r) => r.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help, targets: v.nodes.map((n) => n.target.join(' '))
  }))));
  report.accessibility.push({ screen, violations });
}

// Tab through the page until the element matching `selector` has focus; true if it got there.
async function tabTo(page, selector) {
  for (let i = 0; i < 12; i++) {
    await page.keyboard.press('Tab');
    if (await page.evaluate((sel) => document.activeElement === document.querySelector(sel), selector)) {
      return true;
    }
  }
  return false;
}

async function shot(page, name, step, report) {
  const file = join(config.out, `${name}-${step}.png`);
  await page.screenshot({ path: file, fullPage: true });
  report.screenshots.push(file);
}

async function screenOf(page) {
  return page.evaluate(() => {
    const box = document.querySelector('.lc');
    const text = (sel) => (document.querySelector(sel) || {}).textContent || '';
    return box && {
      screen: box.getAttribute('data-screen'),
      outcome: box.getAttribute('data-outcome'),
      cameraError: box.getAttribute('data-camera-error'),
      status: text('.lc-status'),
      title: text('.lc-result-title'),
      detail: text('.lc-result-detail')
    };
  });
}

async function run(s) {
  const args = ['--use-fake-device-for-media-stream', '--no-first-run', '--no-default-browser-check'];
  if (s.clip) args.push(`--use-file-for-fake-video-capture=${s.clip}`);
  if (s.camera === 'grant') args.push('--use-fake-ui-for-media-stream');
  const browser = await chromium.launch({ executablePath: config.chromium, headless: true, args });
  const report = {
    name: s.name, screens: [], requests: [], cspViolations: [], pageErrors: [], overflow: [],
    screenshots: [], accessibility: []
  };
  try {
    const context = await browser.newContext({
      viewport: s.viewport || { width: 1024, height: 768 },
      isMobile: !!s.mobile, hasTouch: !!s.mobile, deviceScaleFactor: s.mobile ? 2 : 1,
      reducedMotion: s.reducedMotion ? 'reduce' : 'no-preference'
    });
    if (s.camera === 'grant') await context.grantPermissions(['camera'], { origin: new URL(s.url).origin });
    const page = await context.newPage();
    page.on('request', (r) => report.requests.push(r.url()));
    page.on('pageerror', (e) => report.pageErrors.push(String(e)));
    page.on('console', (m) => { if (m.type() === 'error') report.pageErrors.push(`console: ${m.text()}`); });
    await page.addInitScript(() => {
      window.__csp = [];
      document.addEventListener('securitypolicyviolation',
        (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
    });
    await page.goto(s.url);

    if (s.camera === 'grant') {
      // The server's guidance must say "ready" before the button is enabled.
      await page.waitForSelector('.lc[data-screen="camera"][data-guidance="ready"] .lc-capture:not([disabled])',
        { timeout: STEP_MS });
      report.screens.push(await screenOf(page));
      report.ovalTransition = await page.evaluate(
        () => getComputedStyle(document.querySelector('.lc-oval')).transitionDuration);
      await layout(page, 'camera', report);
      await shot(page, s.name, 'camera', report);
      if (s.axe) await audit(page, 'camera', report);
      if (s.keyboard) {
        report.keyboard = await tabTo(page, '.lc-capture');
        await page.keyboard.press('Enter');
      } else {
        await page.click('.lc-capture');
      }
    } else {
      await page.waitForSelector('.lc[data-screen="upload"]', { timeout: STEP_MS });
      report.screens.push(await screenOf(page));
      await layout(page, 'upload', report);
      await shot(page, s.name, 'upload', report);
      if (s.axe) await audit(page, 'upload', report);
      if (s.upload) await page.setInputFiles('.lc-file', s.upload);
    }
    if (s.camera === 'grant' || s.upload) {
      await page.waitForSelector('.lc[data-screen="result"], .lc[data-screen="error"]', { timeout: STEP_MS });
      const last = await screenOf(page);
      report.screens.push(last);
      Object.assign(report, { outcome: last.outcome, title: last.title, detail: last.detail });
      await layout(page, 'result', report);
      await shot(page, s.name, 'result', report);
      if (s.axe) await audit(page, 'result', report);
      report.widgetResult = await page.evaluate(() => window.__result || null);
    }
    // Read on the capture page itself, before any redirect leaves it.
    report.cspViolations = await page.evaluate(() => window.__csp || []);
    if (s.waitForUrl) {
      await page.waitForURL((u) => u.toString().startsWith(s.waitForUrl), { timeout: STEP_MS });
    }
    report.finalUrl = page.url();
  } catch (e) {
    report.failure = String(e && e.stack || e);
  } finally {
    await browser.close();
  }
  return report;
}

const scenarios = [];
for (const s of config.scenarios) scenarios.push(await run(s));
process.stdout.write(JSON.stringify({ scenarios }));
