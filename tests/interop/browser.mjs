// The browser scenario: Debian's Chromium driven by playwright-core (never a downloaded browser).
// Opens a protected page, logs in on the provider's form, lands on the upstream page showing the user's name,
// reloads without visiting the provider, opens a second tab, signs out. Screenshots go to OUT_DIR.
// Environment: BASE_URL, ISSUER, CHROMIUM, OUT_DIR, USER_NAME, EXPECTED_NAME. Exit 0 on success.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { chromium } from 'playwright-core';

const { BASE_URL, ISSUER, CHROMIUM, OUT_DIR, USER_NAME, EXPECTED_NAME } = process.env;
const shot = (page, name) => page.screenshot({ path: path.join(OUT_DIR, name), fullPage: true });
const fail = (why) => {
  console.error(`browser scenario failed: ${why}`);
  process.exitCode = 1;
  throw new Error(why);
};

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'idgate-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
try {
  const page = context.pages()[0] || (await context.newPage());
  const issuerRequests = [];
  context.on('request', (r) => { if (r.url().startsWith(ISSUER)) issuerRequests.push(r.url()); });
  // Chromium may ask for /favicon.ico by itself (not a navigation): such a request must never be sent to log in.
  // (Headless Chromium often skips favicons; tests/it/login.rs sends one with Chromium's own headers.)
  const faviconStatuses = [];
  context.on('response', (r) => { if (r.url().startsWith(BASE_URL) && r.url().endsWith('/favicon.ico')) faviconStatuses.push(r.status()); });

  // 1. A protected page sends the browser to the provider's login form.
  await page.goto(`${BASE_URL}/welcome`);
  if (!page.url().startsWith(ISSUER)) fail(`expected the provider's login page, got ${page.url()}`);
  await page.waitForSelector('input[name=login]');
  await shot(page, '1-provider-login.png');
  await page.fill('input[name=login]', USER_NAME);
  await page.fill('input[name=password]', 'any-password');
  await page.click('button[type=submit]');
  // Consent, when asked, then back at idgate.
  await page.waitForURL((url) => url.href.includes('/interaction/') || url.href.startsWith(`${BASE_URL}/welcome`));
  if (page.url().startsWith(ISSUER)) {
    await page.waitForSelector('button[type=submit]');
    await page.click('button[type=submit]');
  }
  await page.waitForURL(`${BASE_URL}/welcome`);
  const landed = await page.textContent('h1');
  if (!landed.includes(EXPECTED_NAME)) fail(`upstream greeted "${landed}", expected ${EXPECTED_NAME}`);
  await shot(page, '2-landed.png');
  if (faviconStatuses.some((st) => st === 302)) fail(`a favicon request was sent to log in: ${faviconStatuses}`);
  console.log(`favicon requests seen: ${faviconStatuses.length} (${faviconStatuses.join(',')})`);
  const cookies = await context.cookies(BASE_URL);
  const session = cookies.find((c) => c.name === 'idgate');
  if (!session || !session.httpOnly || session.sameSite !== 'Lax') fail(`session cookie attributes: ${JSON.stringify(session)}`);

  // 2. Reload: no visit to the provider.
  const before = issuerRequests.length;
  await page.reload();
  if (!(await page.textContent('h1')).includes(EXPECTED_NAME)) fail('reload lost the session');
  if (issuerRequests.length !== before) fail(`reload went to the provider: ${issuerRequests.slice(before)}`);
  await shot(page, '3-reloaded.png');

  // 3. A second tab shares the session.
  const tab = await context.newPage();
  await tab.goto(`${BASE_URL}/second`);
  if (!(await tab.textContent('h1')).includes(EXPECTED_NAME)) fail('second tab is not logged in');
  await shot(tab, '4-second-tab.png');

  // 4. Sign out: idgate's confirmation, then the provider's.
  await page.goto(`${BASE_URL}/oauth2/sign_out?rd=/signed-out`);
  await Promise.all([page.waitForURL((url) => url.href.startsWith(ISSUER)), page.click('button[type=submit]')]);
  await shot(page, '5a-provider-sign-out.png');
  await page.click('button[name=logout]');
  await page.waitForURL((url) => url.href.startsWith(`${BASE_URL}/signed-out`));
  await shot(page, '5-signed-out.png');
  const after = await context.cookies(BASE_URL);
  if (after.some((c) => c.name === 'idgate' || c.name.startsWith('idgate_'))) fail(`idgate cookies left: ${after.map((c) => c.name)}`);
  if ((await page.textContent('h1')).includes(EXPECTED_NAME)) fail('still greeted after sign-out');
  console.log('browser scenario passed');
} catch (e) {
  if (!process.exitCode) {
    console.error(e);
    process.exitCode = 1;
  }
} finally {
  await context.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
