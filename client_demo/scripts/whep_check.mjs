// A streaming session played over WebRTC (WHEP) in a real headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core): whep_player.html is opened at the control
// API's origin (playwright answers its URL, so the service needs no page of its own), it
// negotiates with POST .../whep, and the check waits for the video to play (time advances,
// frames are presented, a frame drawn to a canvas is not black) and for audio to arrive
// (inbound-rtp samples and energy), then stops with the WHEP DELETE.
//
//   node scripts/whep_check.mjs --base http://127.0.0.1:8080 --session SESSION_ID --key KEY \
//       [--timeout 30]
//
// Prints one JSON line (timings in ms, video and audio measures) on stdout and exits non-zero
// on failure; the page's console goes to stderr. CHROMIUM_BIN overrides the browser.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

import { frameLuminance, measurePlayback } from './video_checks.mjs';

const { values: opts } = parseArgs({
  options: {
    base: { type: 'string', default: 'http://127.0.0.1:8080' },
    session: { type: 'string' },
    key: { type: 'string', default: '' },
    timeout: { type: 'string', default: '30' },
  },
});
const TIMEOUT_MS = Number(opts.timeout) * 1000;
const MIN_LUMA_MEAN = 16; // of 255: a black or nearly black frame is below this
const MIN_ADVANCE_S = 0.5; // over a 1 s wall-clock window
const PLAYER = fs.readFileSync(
  path.join(path.dirname(fileURLToPath(import.meta.url)), 'whep_player.html'),
  'utf8',
);

const t0 = performance.now();
const since = () => Math.round(performance.now() - t0);
const log = (msg) => process.stderr.write(`[whep_check ${since()}ms] ${msg}\n`);
const result = { ok: false, timings_ms: {}, video: {}, audio: {}, page_errors: [] };
let stage = 'launch';

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox',
    '--autoplay-policy=no-user-gesture-required',
    // Host candidates as addresses, not mDNS names, and loopback allowed: on a machine
    // whose only address is 127.0.0.1 the service's candidate is a loopback one.
    '--disable-features=WebRtcHideLocalIpsWithMdns',
    '--allow-loopback-in-peer-connection',
    '--disable-gpu',
    '--disable-dev-shm-usage',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
  ],
});

let exitCode = 1;
try {
  const page = await (await browser.newContext()).newPage();
  page.setDefaultTimeout(TIMEOUT_MS);
  page.on('console', (msg) => log(`[page ${msg.type()}] ${msg.text()}`));
  page.on('pageerror', (err) => {
    result.page_errors.push(err.message);
    log(`[page error] ${err.message}`);
  });
  const base = opts.base.replace(/\/$/, '');
  const pageUrl = `${base}/__whep_player.html`;
  await page.route(pageUrl, (route) =>
    route.fulfill({ status: 200, contentType: 'text/html', body: PLAYER }),
  );

  stage = 'load';
  await page.goto(pageUrl, { waitUntil: 'load' });
  result.timings_ms.load = since();

  stage = 'negotiate';
  const whepUrl = `${base}/api/v1/stream/sessions/${encodeURIComponent(opts.session)}/whep`;
  const negotiateAt = since();
  await page.evaluate(([url, key]) => window.whepPlayer.play(url, key), [whepUrl, opts.key]);
  result.timings_ms.negotiate = since() - negotiateAt;
  result.location = await page.evaluate(() => window.whepPlayer.location);

  stage = 'video';
  await page.waitForFunction(() => {
    const p = window.whepPlayer;
    if (p.state === 'failed') throw new Error('the peer connection failed');
    const v = document.getElementById('video');
    return p.state === 'playing' && v.readyState >= 2 && v.videoWidth > 0 && !v.paused;
  });
  result.timings_ms.to_video = since() - negotiateAt;
  const playback = await measurePlayback(page, 'video');
  Object.assign(result.video, playback);
  if (!(playback.advance_s >= MIN_ADVANCE_S)) {
    throw new Error(`video time advanced ${playback.advance_s.toFixed(3)} s in ~1 s`);
  }

  // A frame through a canvas: not black.
  let frame;
  for (let i = 0; i < 10; i += 1) {
    frame = await frameLuminance(page, 'video');
    if (frame.mean >= MIN_LUMA_MEAN) break;
    await page.waitForTimeout(300);
  }
  result.video.luminance_mean = Number(frame.mean.toFixed(1));
  if (frame.mean < MIN_LUMA_MEAN) throw new Error(`the video looks black (mean ${frame.mean})`);

  stage = 'audio';
  const before = await page.evaluate(() => window.whepPlayer.inbound());
  await page.waitForTimeout(500);
  const after = await page.evaluate(() => window.whepPlayer.inbound());
  result.tracks = await page.evaluate(() => window.whepPlayer.tracks);
  result.audio = {
    codec: after.audio?.codec,
    packets: after.audio?.packets ?? 0,
    samples_per_s: ((after.audio?.samples ?? 0) - (before.audio?.samples ?? 0)) / 0.5,
    energy: after.audio?.energy ?? 0,
  };
  result.video.codec = after.video?.codec;
  result.video.frames_decoded = after.video?.frames;
  if (!(result.audio.packets > 0 && result.audio.samples_per_s > 0)) {
    throw new Error(`no audio arrived: ${JSON.stringify(result.audio)}`);
  }

  stage = 'stop';
  result.delete_status = await page.evaluate((key) => window.whepPlayer.stop(key), opts.key);
  if (result.delete_status !== 200) throw new Error(`DELETE answered ${result.delete_status}`);
  result.timings_ms.total = since();
  result.ok = true;
  exitCode = 0;
} catch (err) {
  result.stage = stage;
  result.error = String(err?.message ?? err).split('\n')[0];
} finally {
  await browser.close();
}
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exit(exitCode);
