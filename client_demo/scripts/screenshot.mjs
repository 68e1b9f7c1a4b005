// Screenshot the demo page in headless Chromium (a manual check, not a test).
//
//   node scripts/screenshot.mjs [--url http://127.0.0.1:8080] [--out /tmp/demo-page.png]
//                               [--join] [--wait-state live] [--say "Hello"] [--timeout 30]
//
// --join clicks Join, --wait-state waits for window.avatarDemo.state, --say sends a chat
// line once joined. CHROMIUM_BIN picks the browser (default /usr/bin/chromium).
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const { values: opts } = parseArgs({
  options: {
    url: { type: 'string', default: 'http://127.0.0.1:8080' },
    out: { type: 'string', default: '/tmp/demo-page.png' },
    join: { type: 'boolean', default: false },
    'wait-state': { type: 'string' },
    say: { type: 'string' },
    timeout: { type: 'string', default: '30' },
  },
});
const timeout = Number(opts.timeout) * 1000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium',
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 900, height: 1000 } });
  page.on('console', (msg) => console.log(`[page ${msg.type()}] ${msg.text()}`));
  page.on('pageerror', (err) => console.log(`[page error] ${err.message}`));
  await page.goto(opts.url, { waitUntil: 'load', timeout });

  if (opts.join) await page.click('#join');
  if (opts['wait-state']) {
    await page.waitForFunction((s) => window.avatarDemo?.state === s, opts['wait-state'], {
      timeout,
    });
  }
  if (opts.say) {
    await page.fill('#chat-input', opts.say);
    await page.click('#send');
    await page.waitForTimeout(1500); // let captions arrive
  }
  const state = await page.evaluate(() => ({
    state: window.avatarDemo?.state,
    avatar: window.avatarDemo?.avatarIdentity,
    room: window.avatarDemo?.room?.name,
    status: document.getElementById('status').textContent.trim(),
  }));
  console.log(JSON.stringify(state));
  await page.screenshot({ path: opts.out });
  console.log(`screenshot: ${opts.out}`);
} finally {
  await browser.close();
}
