// The client against the real render service (tests/test_ts_client.py starts it and runs
// `node --test` on the build): every method, the service's refusals surfacing as
// RenderServiceError with their codes, timeouts and network errors, and seed 001's usage
// examples (examples/) as written.
//
// Environment: LIVEPORTRAIT_SERVICE_URL, AVATAR_API_KEY (read by the client itself),
// RENDER_TEST_WORKDIR (holds character.jpg and characters/astronaut.jpg; the examples write
// there), RENDER_TEST_MAX_UPLOAD_BYTES (the service's AVATAR_MAX_UPLOAD_BYTES).
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { promises as fs } from "node:fs";
import * as net from "node:net";
import * as path from "node:path";

import {
  createLivePortraitClient,
  createLivePortraitRenderer,
  EmotionType,
  IAvatarRenderer,
  LivePortraitClient,
  RenderServiceError,
  RenderTimeoutError,
} from "@avatar-agents/renderer-client";
import { AvatarManager } from "../examples/avatar-manager";
import { avatarConfig } from "../examples/config";
import { EmotionCache } from "../examples/emotion-cache";
import { pregenerateEmotionSet } from "../examples/emotion-set";
import { greyPng } from "../examples/grey-png";
import { readMetrics, watchHealth } from "../examples/monitoring";
import { onCharacterCreated, renderAsBatch, renderOneByOne, useRenderer } from "../examples/performance";
import { setUpRenderer } from "../examples/setup";
import { simpleRender } from "../examples/simple-render";
import { checkServiceStarted, rendererForSlowGpus, renderSmaller } from "../examples/troubleshooting";
import { warmupRenderer } from "../examples/warmup";

const SERVICE_URL = process.env.LIVEPORTRAIT_SERVICE_URL ?? "";
const WORKDIR = process.env.RENDER_TEST_WORKDIR ?? "";
const MAX_UPLOAD_BYTES = Number(process.env.RENDER_TEST_MAX_UPLOAD_BYTES ?? 10 * 1024 * 1024);
const ALL_EMOTIONS = Object.values(EmotionType);

let portrait: Buffer;
let renderer: IAvatarRenderer;
let client: LivePortraitClient;

before(async () => {
  assert.ok(SERVICE_URL, "set LIVEPORTRAIT_SERVICE_URL");
  assert.ok(WORKDIR, "set RENDER_TEST_WORKDIR");
  process.chdir(WORKDIR);
  portrait = await fs.readFile("./character.jpg");
  renderer = createLivePortraitRenderer(SERVICE_URL);
  await renderer.initialize();
  client = createLivePortraitClient({ baseUrl: SERVICE_URL });
});

after(async () => {
  await renderer.cleanup();
  client.close();
});

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The JPEG with a comment segment added after its start: the same picture, bytes (and so a
 * hash) the service has not seen. */
function unseen(jpeg: Buffer, tag: string): Buffer {
  const text = Buffer.from(`${tag} ${process.pid} ${Date.now()} ${Math.random()}`);
  const header = Buffer.from([0xff, 0xfe, 0, 0]);
  header.writeUInt16BE(text.length + 2, 2);
  return Buffer.concat([jpeg.subarray(0, 2), header, text, jpeg.subarray(2)]);
}

/** [format, width, height] read from an encoded picture's header. */
function imageInfo(image: Buffer): [string, number, number] {
  if (image.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) {
    return ["png", image.readUInt32BE(16), image.readUInt32BE(20)];
  }
  if (image[0] === 0xff && image[1] === 0xd8) {
    let at = 2;
    while (at < image.length) {
      const marker = image[at + 1];
      const length = image.readUInt16BE(at + 2);
      if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) {
        return ["jpeg", image.readUInt16BE(at + 7), image.readUInt16BE(at + 5)];
      }
      at += 2 + length;
    }
  }
  if (image.toString("ascii", 0, 4) === "RIFF" && image.toString("ascii", 8, 12) === "WEBP") {
    const kind = image.toString("ascii", 12, 16);
    if (kind === "VP8 ") return ["webp", image.readUInt16LE(26) & 0x3fff, image.readUInt16LE(28) & 0x3fff];
    if (kind === "VP8X") return ["webp", image.readUIntLE(24, 3) + 1, image.readUIntLE(27, 3) + 1];
  }
  return ["unknown", 0, 0];
}

async function refusal(call: Promise<unknown>, status: number, code: string): Promise<RenderServiceError> {
  const error = await call.then(
    () => assert.fail(`expected ${status} ${code}, the call succeeded`),
    (e: unknown) => e,
  );
  assert.ok(error instanceof RenderServiceError, `not a RenderServiceError: ${error}`);
  assert.equal(error.code, code, error.message);
  assert.equal(error.status, status, error.message);
  assert.ok(error.message.length > 0);
  return error;
}

describe("the client against the service", () => {
  it("knows exactly the emotions the service accepts", async () => {
    assert.deepEqual(await client.emotions(), ALL_EMOTIONS);
  });

  it("reports health: ready, gpuAvailable", async () => {
    const health = await renderer.health();
    assert.equal(health.ready, true);
    assert.equal(typeof health.gpuAvailable, "boolean");
    assert.equal(health.render?.state, "ready");
    assert.ok(health.version);
  });

  for (const [format, width, height] of [
    ["png", 512, 512],
    ["jpeg", 320, 240],
    ["webp", 256, 256],
  ] as const) {
    it(`renders a frame as ${format} at ${width}x${height}`, async () => {
      const result = await renderer.renderFrame(portrait, {
        emotion: EmotionType.SURPRISED,
        intensity: 0.9,
        format,
        width,
        height,
      });
      assert.ok(result.image instanceof Buffer);
      assert.deepEqual(imageInfo(result.image), [format, width, height]);
      assert.equal(result.metadata.emotion, EmotionType.SURPRISED);
      assert.equal(result.metadata.intensity, 0.9);
      assert.equal(result.metadata.renderer, "meshwarp");
      assert.deepEqual([result.metadata.width, result.metadata.height, result.metadata.format], [width, height, format]);
      assert.ok(result.latencyMs > 0 && result.latencyMs <= (result.roundTripMs ?? Infinity));
    });
  }

  it("renders neutral and happy differently", async () => {
    const neutral = await renderer.renderFrame(portrait, { emotion: EmotionType.NEUTRAL, format: "jpeg" });
    const happy = await renderer.renderFrame(portrait, { emotion: EmotionType.HAPPY, format: "jpeg" });
    assert.notDeepEqual(neutral.image, happy.image);
    assert.equal(neutral.metadata.intensity, 0.7); // the default
  });

  it("renders a batch in order, the portrait analysed at most once", async () => {
    const emotions = [...ALL_EMOTIONS].reverse();
    const results = await renderer.renderBatch(portrait, emotions, 0.5);
    assert.deepEqual(results.map((r) => r.metadata.emotion), emotions);
    assert.ok(results.every((r) => r.image instanceof Buffer && r.metadata.intensity === 0.5));
    assert.ok(results.slice(1).every((r) => r.metadata.analysed === false));
    const raw = await client.renderBatch(portrait, [EmotionType.SAD], { format: "webp", width: 128, height: 128 });
    assert.equal(raw.results.length, 1);
    assert.equal(typeof raw.results[0].image, "string");
    assert.ok(raw.latencyMs > 0);
  });

  it("answers the seed's warm-up image as a warm-up", async () => {
    const result = await renderer.renderFrame(greyPng(512, 512), { emotion: EmotionType.NEUTRAL });
    assert.equal(result.metadata.warmup, true);
    assert.deepEqual(imageInfo(result.image), ["png", 512, 512]);
  });

  it("surfaces the service's refusals with their codes", async () => {
    const corrupt = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.alloc(500, 7)]);
    await refusal(renderer.renderFrame(corrupt), 422, "invalid_image");
    const unknown = await refusal(
      renderer.renderFrame(portrait, { emotion: "joyful" as EmotionType }),
      422,
      "invalid_emotion",
    );
    assert.deepEqual(unknown.valid, ALL_EMOTIONS);
    assert.equal(unknown.retryable, false);
    const oversized = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff]), Buffer.alloc(MAX_UPLOAD_BYTES)]);
    await refusal(renderer.renderFrame(oversized), 413, "payload_too_large");
    // Far over the route's body limit: refused before the body is read, the connection closed.
    const huge = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff]), Buffer.alloc(3 * MAX_UPLOAD_BYTES)]);
    await refusal(renderer.renderFrame(huge), 413, "payload_too_large");
    await refusal(renderer.renderBatch(portrait, Array(17).fill(EmotionType.HAPPY)), 422, "too_many_emotions");
    await refusal(renderer.renderBatch(portrait, []), 422, "invalid_field");
    await refusal(renderer.renderFrame(portrait, { width: 2000 }), 422, "invalid_size");
    await refusal(renderer.renderFrame(portrait, { intensity: 2 }), 422, "invalid_intensity");
    await refusal(renderer.renderFrame(portrait, { format: "gif" as "png" }), 422, "invalid_format");
    await refusal(renderer.renderFrame(portrait, { renderer: "testcard" }), 422, "renderer_not_allowed");
    const room = await fs.readFile(path.join(WORKDIR, "room.jpg"));
    await refusal(renderer.renderFrame(room), 422, "no_face");
    // And still works afterwards, on the same kept-alive connections.
    const result = await renderer.renderFrame(portrait, { format: "jpeg" });
    assert.equal(imageInfo(result.image)[0], "jpeg");
  });

  it("rejects a wrong key with 401 unauthorized", async () => {
    const stranger = createLivePortraitRenderer(SERVICE_URL, 5000, { apiKey: "wrong-key" });
    await refusal(stranger.initialize(), 401, "unauthorized");
    await refusal(stranger.renderFrame(portrait), 401, "unauthorized");
    await stranger.cleanup();
  });

  it("times out with a clear error", async () => {
    const hasty = createLivePortraitRenderer(SERVICE_URL, 1);
    const error = await hasty.renderBatch(portrait, ALL_EMOTIONS).then(
      () => assert.fail("no timeout"),
      (e: unknown) => e,
    );
    assert.ok(error instanceof RenderTimeoutError);
    assert.equal(error.code, "timeout");
    assert.equal(error.status, 0);
    assert.equal(error.retryable, true);
    assert.match(error.message, /longer than 1 ms/);
    await hasty.cleanup();
  });

  it("reports a service that is not there as a network error", async () => {
    const port = await new Promise<number>((resolve) => {
      const server = net.createServer().listen(0, "127.0.0.1", () => {
        const { port } = server.address() as net.AddressInfo;
        server.close(() => resolve(port));
      });
    });
    const nobody = createLivePortraitClient({ baseUrl: `http://127.0.0.1:${port}`, timeoutMs: 2000 });
    const error = await refusal(nobody.health(), 0, "network_error");
    assert.equal(error.retryable, true);
    assert.equal(await nobody.waitForHealthy(2, 10), false);
    nobody.close();
  });

  it("reads the metrics and waits for health", async () => {
    const metrics = await client.getMetrics();
    for (const name of [
      "liveportrait_requests_total",
      "liveportrait_request_duration_seconds",
      "liveportrait_errors_total",
    ]) {
      assert.ok(metrics.includes(name), name);
    }
    assert.match(metrics, /liveportrait_errors_total\{code="invalid_emotion",renderer="meshwarp"\} [1-9]/);
    assert.equal(await client.waitForHealthy(3, 100), true);
  });

  it("measures the seed's render (astronaut, happy 0.7, 512x512 PNG)", async (t) => {
    // Not behind the batch the timeout test left rendering.
    for (let i = 0; i < 100 && (await client.health()).render?.busy; i++) await sleep(50);
    const latencies: number[] = [];
    const trips: number[] = [];
    for (let i = 0; i < 10; i++) {
      const result = await renderer.renderFrame(portrait, { emotion: EmotionType.HAPPY, intensity: 0.7 });
      latencies.push(result.latencyMs);
      trips.push(result.roundTripMs ?? 0);
    }
    const sorted = [...latencies].sort((a, b) => a - b);
    const last = await renderer.renderFrame(portrait, { emotion: EmotionType.HAPPY, intensity: 0.7 });
    t.diagnostic(`latency frame ms: ${latencies.join(" ")} (round trips ${trips.join(" ")})`);
    t.diagnostic(`latency frame median ${sorted[4]} max ${sorted[9]}; timings ${JSON.stringify(last.metadata.timings)}`);
    const batch = await renderer.renderBatch(portrait, ALL_EMOTIONS, 0.7);
    t.diagnostic(`latency batch of 7 (cached portrait): round trip ${batch[0].roundTripMs}, per result ${batch.map((r) => r.latencyMs).join(" ")}`);
    const fresh = unseen(portrait, "frame");
    const first = await renderer.renderFrame(fresh, { emotion: EmotionType.HAPPY, intensity: 0.7 });
    const second = await renderer.renderFrame(fresh, { emotion: EmotionType.HAPPY, intensity: 0.7 });
    assert.equal(first.metadata.analysed, true);
    assert.equal(second.metadata.analysed, false);
    t.diagnostic(`latency unseen portrait: first ${first.latencyMs} ${JSON.stringify(first.metadata.timings)}, again ${second.latencyMs}`);
    const freshBatch = await renderer.renderBatch(unseen(portrait, "batch"), ALL_EMOTIONS, 0.7);
    assert.deepEqual(freshBatch.map((r) => r.metadata.analysed), [true, false, false, false, false, false, false]);
    t.diagnostic(`latency batch of 7 (unseen portrait): round trip ${freshBatch[0].roundTripMs}, per result ${freshBatch.map((r) => r.latencyMs).join(" ")}`);
    const warm = await renderer.renderFrame(greyPng(512, 512), { emotion: EmotionType.NEUTRAL });
    t.diagnostic(`latency warm-up probe: ${warm.latencyMs} (round trip ${warm.roundTripMs})`);
    assert.ok(sorted[4] > 0);
  });
});

describe("seed 001's examples, as written", () => {
  it("sets up the renderer (Integration Steps 2)", async () => {
    const mine = await setUpRenderer();
    assert.equal((await mine.health()).ready, true);
    await mine.cleanup();
  });

  it("AvatarManager renders an emotion and preloads all of them", async () => {
    const manager = new AvatarManager();
    await manager.initialize({ livePortraitUrl: avatarConfig.serviceUrl, timeout: avatarConfig.timeout });
    const happy = await manager.renderEmotion(portrait, EmotionType.HAPPY);
    assert.deepEqual(imageInfo(happy), ["png", 512, 512]);
    const all = await manager.preloadEmotions(portrait);
    assert.deepEqual([...all.keys()], ALL_EMOTIONS);
    assert.ok([...all.values()].every((image) => imageInfo(image)[0] === "png"));
  });

  it("Simple Render writes ./output.png", async () => {
    await fs.rm("./output.png", { force: true });
    await simpleRender();
    assert.deepEqual(imageInfo(await fs.readFile("./output.png")), ["png", 512, 512]);
  });

  it("Pre-generate Emotion Set writes four files", async () => {
    await pregenerateEmotionSet(renderer, portrait);
    for (const emotion of ["neutral", "happy", "sad", "surprised"]) {
      assert.equal(imageInfo(await fs.readFile(`./output_${emotion}.png`))[0], "png");
    }
  });

  it("EmotionCache renders once per key and preloads a character", async () => {
    const cache = new EmotionCache();
    const first = await cache.getOrRender(renderer, "astronaut", EmotionType.SAD, 0.6);
    const again = await cache.getOrRender(renderer, "astronaut", EmotionType.SAD, 0.6);
    assert.equal(again, first); // the very Buffer: no second request
    await cache.preloadCharacter(renderer, "astronaut");
    for (const emotion of ALL_EMOTIONS) {
      const cached = await cache.getOrRender(renderer, "astronaut", emotion, 0.7);
      assert.equal(imageInfo(cached)[0], "png");
    }
  });

  it("Warm-up on Startup succeeds with the grey 512x512 PNG", async () => {
    await warmupRenderer(renderer);
  });

  it("Batch Processing: one by one and as a batch", async () => {
    const emotions = [EmotionType.HAPPY, EmotionType.CONCERNED];
    await renderOneByOne(renderer, portrait, emotions);
    await renderAsBatch(renderer, portrait, emotions);
  });

  it("Pre-generation: onCharacterCreated fills the cache", async () => {
    useRenderer(renderer);
    const cache = await onCharacterCreated({ id: "astronaut" });
    assert.ok(cache instanceof EmotionCache);
  });

  it("Health Checks run on their interval", async (t) => {
    const errors = t.mock.method(console, "error", () => undefined);
    const timer = watchHealth(renderer, 50);
    await new Promise((resolve) => setTimeout(resolve, 220));
    clearInterval(timer);
    await new Promise((resolve) => setTimeout(resolve, 100)); // the last check's answer
    assert.equal(errors.mock.callCount(), 0);
  });

  it("Metrics names the seed's three series", async () => {
    const metrics = await readMetrics();
    assert.match(metrics, /liveportrait_requests_total/);
    assert.match(metrics, /liveportrait_request_duration_seconds_bucket/);
    assert.match(metrics, /liveportrait_errors_total/);
  });

  it("Troubleshooting: waitForHealthy, a smaller resolution, a longer timeout", async () => {
    await checkServiceStarted();
    const small = await renderSmaller(renderer, portrait);
    assert.deepEqual(imageInfo(small.image), ["png", 256, 256]);
    const patient = rendererForSlowGpus();
    await patient.initialize();
    assert.equal((await patient.renderFrame(portrait, { format: "jpeg" })).metadata.format, "jpeg");
    await patient.cleanup();
  });
});
