// End-to-end check of the web client in a real headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core): the page loads, Join connects, the avatar's video plays (time
// advances, frames are not black), clicking an emotion changes the session's state (seen on
// the page through the WS state_changed event), and a screenshot is saved.
//
//   node scripts/browser_check.mjs --url 'http://127.0.0.1:8080/#api_key=KEY' \
//       [--screenshot ../docs/web-client.png] [--emotion happy] [--say "Hello"] \
//       [--timeout 60] [--join-attempts 1] [--avatar-timeout 60] [--hold]
//
// --timeout is for each step. --join-attempts N: when the avatar has not appeared
// --avatar-timeout seconds (default: --timeout) after Join, press
// Leave and Join again, up to N times in all (a dispatch can be refused while the machine's
// CPU is saturated: livekit-server then offers the job to no worker and does not retry it).
// Prints one JSON line (timings in ms, luminance, the emotion seen) on stdout and exits
// non-zero on failure; the page's console goes to stderr. With --hold it stays in the session
// after printing, until its stdin closes, so that a caller can look at the session from the
// API side; then it presses Leave (which deletes the session) and exits.
// CHROMIUM_BIN overrides the browser (default /usr/bin/chromium).
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

import { frameLuminance, measurePlayback } from './video_checks.mjs';

const { values: opts } = parseArgs({
  options: {
    url: { type: 'string', default: 'http://127.0.0.1:8080/' },
    screenshot: { type: 'string' },
    emotion: { type: 'string', default: 'happy' },
    say: { type: 'string' },
    timeout: { type: 'string', default: '60' },
    'join-attempts': { type: 'string', default: '1' },
    'avatar-timeout': { type: 'string' },
    hold: { type: 'boolean', default: false },
  },
});
const TIMEOUT_MS = Number(opts.timeout) * 1000;
const AVATAR_TIMEOUT_MS = Number(opts['avatar-timeout'] ?? opts.timeout) * 1000;
const MIN_LUMA_MEAN = 16; // of 255: a black or nearly black frame is below this
const MIN_LUMA_STD = 6; // a flat frame (one colour) is below this
const MIN_ADVANCE_S = 0.5; // over a 1 s wall-clock window

const t0 = performance.now();
const since = () => Math.round(performance.now() - t0);
const result = {
  ok: false,
  url: opts.url.replace(/api_key=[^&]*/, 'api_key=***'),
  timings_ms: {},
  video: {},
  emotion: { requested: opts.emotion, seen: null },
  session_id: null,
  avatar_identity: null,
  caption: null,
  page_errors: [],
  screenshot: null,
};
let stage = 'launch';
const log = (msg) => process.stderr.write(`[browser_check ${since()}ms] ${msg}\n`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox',
    '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream',
    '--autoplay-policy=no-user-gesture-required',
    '--disable-gpu',
    '--disable-dev-shm-usage',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
  ],
});

let page;
let exitCode = 1;
try {
  result.timings_ms.launch = since();
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT_MS);
  page.on('console', (msg) => log(`[page ${msg.type()}] ${msg.text()}`));
  page.on('pageerror', (err) => {
    result.page_errors.push(err.message);
    log(`[page error] ${err.message}`);
  });

  stage = 'load';
  await page.goto(opts.url, { waitUntil: 'load' });
  await page.waitForFunction(() => window.avatarDemo?.state === 'idle');
  // The catalog (GET /emotions) is in: the emotion's button exists.
  await page.waitForSelector(`#emotions button[data-id="${opts.emotion}"]`, { state: 'attached' });
  result.timings_ms.load = since();
  const keyGone = await page.evaluate(() => !window.location.hash.includes('api_key'));
  if (!keyGone) throw new Error('the API key is still in the address bar');

  stage = 'join';
  const attempts = Math.max(1, Number(opts['join-attempts']) || 1);
  let joinAt;
  for (let attempt = 1; ; attempt += 1) {
    joinAt = since();
    result.join_attempts = attempt;
    await page.click('#join');
    try {
      await page.waitForFunction(() => {
        const d = window.avatarDemo;
        if (d.state === 'error') throw new Error(`join failed: ${d.lastError?.message ?? '?'}`);
        return d.state === 'live';
      }, null, { timeout: AVATAR_TIMEOUT_MS });
      break;
    } catch (err) {
      if (attempt >= attempts || !String(err?.message).includes('Timeout')) throw err;
      log(`attempt ${attempt}: no avatar after ${AVATAR_TIMEOUT_MS / 1000} s; leaving and joining again`);
      const sid = await page.evaluate(() => window.avatarDemo.sessionId);
      await page.click('#leave');
      await page.waitForFunction(
        (id) => window.avatarDemo.state === 'idle' && window.avatarDemo.deletedSessionId === id,
        sid,
      );
    }
  }
  result.timings_ms.join_to_live = since() - joinAt;
  await page.waitForFunction(
    () =>
      window.avatarDemo.wsStatus === 'open' &&
      window.avatarDemo.events.some((e) => e.type === 'state'),
  );
  result.timings_ms.join_to_events = since() - joinAt;
  Object.assign(
    result,
    await page.evaluate(() => ({
      session_id: window.avatarDemo.sessionId,
      avatar_identity: window.avatarDemo.avatarIdentity,
    })),
  );

  stage = 'video';
  await page.waitForFunction(() => {
    const v = document.getElementById('avatar-video');
    return v.readyState >= 2 && v.videoWidth > 0 && !v.paused;
  });
  result.timings_ms.join_to_video = since() - joinAt;
  // Time advances and frames keep coming: currentTime and presented frames over 1 s.
  const playback = await measurePlayback(page, 'avatar-video');
  Object.assign(result.video, playback);
  if (!(playback.advance_s >= MIN_ADVANCE_S)) {
    throw new Error(`video time advanced ${playback.advance_s.toFixed(3)} s in ~1 s`);
  }

  // A frame through a canvas: not black (mean luminance) and not flat (its spread). The first
  // frames after a join can still be dark, so look a few times.
  let frame;
  for (let i = 0; i < 10; i += 1) {
    frame = await frameLuminance(page, 'avatar-video');
    if (frame.mean >= MIN_LUMA_MEAN && frame.std >= MIN_LUMA_STD) break;
    await page.waitForTimeout(500);
  }
  result.video.luminance_mean = Number(frame.mean.toFixed(1));
  result.video.luminance_std = Number(frame.std.toFixed(1));
  if (frame.mean < MIN_LUMA_MEAN || frame.std < MIN_LUMA_STD) {
    throw new Error(`the video frame looks black or flat (mean ${frame.mean}, std ${frame.std})`);
  }

  stage = 'emotion';
  const emotion = opts.emotion;
  const clickAt = since();
  await page.click(`#emotions button[data-id="${emotion}"]`);
  // From the event socket: a state_changed carrying the new emotion ...
  await page.waitForFunction((want) => {
    const d = window.avatarDemo;
    if (d.lastError?.what === 'Emotion') throw new Error(`emotion failed: ${d.lastError.message}`);
    return d.events.some(
      (e) =>
        e.type === 'state_changed' && (e.changes?.emotion === want || e.session?.emotion === want),
    );
  }, emotion);
  result.timings_ms.emotion_event = since() - clickAt;
  // ... and the page shows it: the button pressed, the state line.
  await page.waitForFunction(
    (want) =>
      document
        .querySelector(`#emotions button[data-id="${want}"]`)
        ?.getAttribute('aria-pressed') === 'true' &&
      document.getElementById('state-emotion').textContent.startsWith(want) &&
      window.avatarDemo.avatarState.emotion === want,
    emotion,
  );
  result.emotion.seen = await page.evaluate(() => window.avatarDemo.avatarState.emotion);
  result.timings_ms.emotion_shown = since() - clickAt;

  if (opts.say) {
    stage = 'say';
    const sayAt = since();
    await page.fill('#say-input', opts.say);
    await page.click('#say-send');
    const firstWord = opts.say.split(/\s+/)[0].replace(/[^\p{L}\p{N}]/gu, '').toLowerCase();
    await page.waitForFunction(
      (word) =>
        [...document.querySelectorAll('#captions li:not(.user) .text')].some((el) =>
          el.textContent.toLowerCase().includes(word),
        ),
      firstWord,
    );
    result.timings_ms.say_to_caption = since() - sayAt;
    await page.waitForTimeout(800); // let the caption fill in and the mouth move
    result.caption = await page.evaluate(
      () => [...document.querySelectorAll('#captions li:not(.user) .text')].at(-1)?.textContent,
    );
  }

  if (opts.screenshot) {
    stage = 'screenshot';
    // Let the avatar's 300 ms expression ease finish before the picture.
    await page.waitForTimeout(600);
    await page.evaluate(() => document.activeElement?.blur());
    await page.screenshot({ path: opts.screenshot });
    result.screenshot = opts.screenshot;
  }
  result.timings_ms.total = since();
  result.ok = true;
  exitCode = 0;
} catch (err) {
  result.ok = false;
  result.stage = stage;
  result.error = String(err?.message ?? err).split('\n')[0];
  if (page) {
    result.page_state = await page
      .evaluate(() => {
        const d = window.avatarDemo;
        return d
          ? {
              state: d.state,
              wsStatus: d.wsStatus,
              lastError: d.lastError,
              avatarIdentity: d.avatarIdentity,
              events: d.events.map((e) => e.type),
              status: document.getElementById('status').textContent.trim(),
            }
          : null;
      })
      .catch(() => null);
    const shot = path.join(os.tmpdir(), 'web-client-failure.png');
    await page
      .screenshot({ path: shot })
      .then(() => {
        result.failure_screenshot = shot;
      })
      .catch(() => {});
  }
}

process.stdout.write(`${JSON.stringify(result)}\n`);

if (exitCode === 0) {
  if (opts.hold) {
    // The caller looks at the session from the API side, then closes our stdin.
    await new Promise((resolve) => {
      process.stdin.on('end', resolve);
      process.stdin.on('error', resolve);
      process.stdin.resume();
    });
  }
  try {
    await page.click('#leave', { timeout: 5000 });
    // Leave disconnects, then deletes the session (DELETE /avatars/{id}).
    await page.waitForFunction(
      (sid) => {
        const d = window.avatarDemo;
        if (d.lastError?.what === 'Leave') throw new Error(`leave failed: ${d.lastError.message}`);
        return d.state === 'idle' && d.deletedSessionId === sid;
      },
      result.session_id,
      { timeout: 15000 },
    );
  } catch (err) {
    log(`leave failed: ${err?.message ?? err}`);
    exitCode = 1;
  }
}
await browser.close().catch(() => {});
process.exit(exitCode);
