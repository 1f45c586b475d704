// Form posts survive a re-login (issue 16), in Debian's Chromium driven by playwright-core. For each of two forms
// (urlencoded with non-ASCII text; multipart with a binary file): log in, fill the form, let the session end
// (the test upstream's /expire moves the gate's clock past the ID token's exp), submit, log in again at the
// provider, and check that the upstream's answer — shown at the original URL — reports the very bytes Chromium
// sent first, received once.
// Environment: BASE_URL, ISSUER, UPSTREAM (the test upstream, direct), CHROMIUM, OUT_DIR, USER_NAME. Exit 0 on
// success; prints one `sent <path> <sha256> <length>` line per form.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { chromium } from 'playwright-core';

const { BASE_URL, ISSUER, UPSTREAM, CHROMIUM, OUT_DIR, USER_NAME } = process.env;
const shot = (page, name) => page.screenshot({ path: path.join(OUT_DIR, name), fullPage: true });
const fail = (why) => {
  console.error(`preserved-post scenario failed: ${why}`);
  process.exitCode = 1;
  throw new Error(why);
};
const sha = (buf) => crypto.createHash('sha256').update(buf).digest('hex');

/// Walks the provider's pages (login form, consent) if it shows any, until the browser is back at `until`.
async function throughProvider(page, until) {
  for (let i = 0; i < 6; i += 1) {
    await page.waitForURL((url) => url.href.startsWith(until) || (url.href.startsWith(ISSUER) && url.href.includes('/interaction/')));
    if (page.url().startsWith(until)) return;
    await page.waitForSelector('button[type=submit]');
    if (await page.$('input[name=login]')) {
      await page.fill('input[name=login]', USER_NAME);
      await page.fill('input[name=password]', 'any-password');
    }
    await page.click('button[type=submit]');
  }
  fail(`never came back to ${until}: at ${page.url()}`);
}

const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'idgate-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
try {
  const page = context.pages()[0] || (await context.newPage());
  // Every POST Chromium makes to the gate, with the body it sent.
  const posts = [];
  context.on('request', (r) => {
    if (r.method() === 'POST' && r.url().startsWith(BASE_URL)) {
      posts.push({ url: r.url(), type: r.headers()['content-type'], body: r.postDataBuffer() });
    }
  });

  // Logged in, on the application's form page.
  await page.goto(`${BASE_URL}/forms`);
  await throughProvider(page, `${BASE_URL}/forms`);
  await page.waitForSelector('#orders');
  await shot(page, 'post-1-form.png');

  const scenarios = [
    {
      name: 'urlencoded',
      path: '/orders?step=2',
      fill: async () => {
        await page.fill('#orders input[name=title]', 'Zoë & 山田 = 100% + more');
        await page.fill('#orders textarea[name=note]', 'line one\nline two\r\n\ttabbed');
      },
      submit: '#orders button[type=submit]',
    },
    {
      name: 'multipart',
      path: '/upload',
      fill: async () => {
        await page.fill('#upload input[name=title]', 'Rapport für 山田');
        const bytes = Buffer.alloc(6000);
        for (let i = 0; i < bytes.length; i += 1) bytes[i] = (i * 7) % 256;
        await page.setInputFiles('#upload input[name=file]', { name: 'scan.bin', mimeType: 'application/octet-stream', buffer: bytes });
      },
      submit: '#upload button[type=submit]',
    },
  ];
  for (const [i, s] of scenarios.entries()) {
    if (i > 0) {
      await page.goto(`${BASE_URL}/forms`);
      await page.waitForSelector('#orders');
    }
    await s.fill();
    // The session ends while the user fills the form.
    const expired = await fetch(`${UPSTREAM}/expire`);
    if (!expired.ok) fail(`could not end the session: ${expired.status}`);
    const before = posts.length;
    await page.click(s.submit);
    await throughProvider(page, `${BASE_URL}${s.path}`);
    await page.waitForSelector('#received');
    await shot(page, `post-${i + 2}-${s.name}-received.png`);
    if (page.url() !== `${BASE_URL}${s.path}`) fail(`${s.name}: the answer is at ${page.url()}, not the original URL`);
    const first = posts[before];
    if (!first || !first.url.endsWith(s.path)) fail(`${s.name}: Chromium's first POST not seen: ${JSON.stringify(posts.slice(before).map((p) => p.url))}`);
    const got = {
      sha: await page.textContent('#sha'),
      len: Number(await page.textContent('#len')),
      count: Number(await page.textContent('#count')),
      type: await page.textContent('#type'),
    };
    if (got.type !== first.type) fail(`${s.name}: content type ${got.type}, Chromium sent ${first.type}`);
    if (got.count !== 1) fail(`${s.name}: the upstream received the post ${got.count} times`);
    if (first.body) {
      // Where Chromium reports the body it sent (it does not for file uploads), the upstream got exactly those bytes.
      if (got.sha !== sha(first.body) || got.len !== first.body.length) fail(`${s.name}: upstream got ${got.len} bytes ${got.sha}, Chromium sent ${first.body.length} bytes ${sha(first.body)}`);
    }
    const resumed = posts.slice(before + 1);
    if (resumed.length !== 1 || !resumed[0].url.endsWith(s.path)) fail(`${s.name}: expected one resume form, saw ${resumed.map((p) => p.url)}`);
    if (resumed[0].body && resumed[0].body.includes(Buffer.from('line one'))) fail(`${s.name}: the body went through the page in clear`);
    console.log(`sent ${s.path} ${got.sha} ${got.len} reported=${first.body ? 'yes' : 'no'}`);
  }
  console.log('preserved-post scenario passed');
} catch (e) {
  if (!process.exitCode) {
    console.error(e);
    process.exitCode = 1;
  }
} finally {
  await context.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
