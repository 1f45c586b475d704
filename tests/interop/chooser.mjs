// Two issuers behind one idgate ([[providers]]), in Debian's Chromium (playwright-core, never a downloaded browser):
// a page no route or host decides shows idgate's chooser; its first button logs in at the first provider; a route of
// the second provider then sends the same browser straight to that provider's login, and lands with its identity.
// Screenshots go to OUT_DIR.
// Environment: BASE_URL, ISSUER_A, ISSUER_B, TITLE_A, NAME_A, NAME_B, ROUTE_B, CHROMIUM, OUT_DIR, USER_NAME,
// EXPECTED_NAME. Exit 0 on success.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { chromium } from 'playwright-core';

const env = process.env;
const shot = (page, name) => page.screenshot({ path: path.join(env.OUT_DIR, name), fullPage: true });
const fail = (why) => {
  console.error(`chooser scenario failed: ${why}`);
  process.exitCode = 1;
  throw new Error(why);
};

// The provider's own login (and consent) pages, until the browser is back at `landing`.
async function logInAtProvider(page, issuer, landing) {
  if (!page.url().startsWith(issuer)) fail(`expected ${issuer}'s login page, got ${page.url()}`);
  await page.waitForSelector('input[name=login]');
  await page.fill('input[name=login]', env.USER_NAME);
  await page.fill('input[name=password]', 'any-password');
  await page.click('button[type=submit]');
  await page.waitForURL((url) => url.href.includes('/interaction/') || url.href.startsWith(landing));
  if (page.url().startsWith(issuer)) {
    await page.waitForSelector('button[type=submit]');
    await page.click('button[type=submit]');
  }
  await page.waitForURL(landing);
}

// The identity headers the demo upstream lists: the issuer header's value.
async function issuerShown(page) {
  return page.$$eval('tr', (rows) => {
    const row = rows.find((r) => r.cells.length === 2 && r.cells[0].textContent.trim() === 'x-auth-request-issuer');
    return row ? row.cells[1].textContent.trim() : null;
  });
}

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'idgate-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: env.CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
try {
  const page = context.pages()[0] || (await context.newPage());
  // 1. A page no route or host decides: idgate's chooser, one button per provider.
  await page.goto(`${env.BASE_URL}/welcome`);
  if (!page.url().startsWith(`${env.BASE_URL}/oauth2/start`)) fail(`expected the chooser, got ${page.url()}`);
  const buttons = await page.$$eval('ul.choices a', (as) => as.map((a) => a.textContent));
  if (buttons.length !== 2 || !buttons.includes(env.TITLE_A)) fail(`chooser buttons: ${JSON.stringify(buttons)}`);
  await shot(page, '1-chooser.png');
  // 2. The first provider's button: its login, then back with its identity.
  await page.click(`text=${env.TITLE_A}`);
  await logInAtProvider(page, env.ISSUER_A, `${env.BASE_URL}/welcome`);
  const landed = await page.textContent('h1');
  if (!landed.includes(env.EXPECTED_NAME)) fail(`upstream greeted "${landed}", expected ${env.EXPECTED_NAME}`);
  if ((await issuerShown(page)) !== env.NAME_A) fail(`issuer header ${await issuerShown(page)}, expected ${env.NAME_A}`);
  await shot(page, '2-landed-a.png');
  // 3. The second provider's route: the first session does not open it; straight to the second provider.
  await page.goto(`${env.BASE_URL}${env.ROUTE_B}`);
  await logInAtProvider(page, env.ISSUER_B, `${env.BASE_URL}${env.ROUTE_B}`);
  if ((await issuerShown(page)) !== env.NAME_B) fail(`issuer header ${await issuerShown(page)}, expected ${env.NAME_B}`);
  await shot(page, '3-landed-b.png');
  console.log('chooser scenario passed');
} catch (e) {
  if (!process.exitCode) {
    console.error(e);
    process.exitCode = 1;
  }
} finally {
  await context.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
