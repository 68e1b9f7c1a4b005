import { performance } from "node:perf_hooks";

import { DEFAULT_TIMEOUT_MS, LivePortraitClient, sleep } from "./client";
import { RenderServiceError } from "./errors";
import type {
  ClientOptions,
  EmotionType,
  HealthStatus,
  IAvatarRenderer,
  RawFrame,
  RenderOptions,
  RenderResult,
} from "./types";

const READY_POLL_MS = 250;

/** Seed 001's `IAvatarRenderer` over the render service (whichever renderer it runs). */
export class LivePortraitRenderer implements IAvatarRenderer {
  readonly client: LivePortraitClient;

  constructor(options: ClientOptions) {
    this.client = new LivePortraitClient(options);
  }

  async initialize(): Promise<void> {
    await this.client.emotions(); // answers, and takes the credentials (else 401 unauthorized)
    const deadline = performance.now() + this.client.timeoutMs;
    for (;;) {
      const health = await this.client.health();
      if (health.ready) return;
      if (performance.now() >= deadline) {
        const why = health.render?.error?.message ?? `its render service is ${health.render?.state ?? "not ready"}`;
        throw new RenderServiceError(
          "not_ready",
          503,
          `the service at ${this.client.baseUrl} did not get ready within ${this.client.timeoutMs} ms: ${why}`,
          { retryable: true },
        );
      }
      await sleep(READY_POLL_MS);
    }
  }

  async renderFrame(image: Buffer, options: RenderOptions = {}): Promise<RenderResult> {
    const started = performance.now();
    const raw = await this.client.renderFrame(image, options);
    return { ...decode(raw), roundTripMs: round(performance.now() - started) };
  }

  async renderBatch(image: Buffer, emotions: EmotionType[], intensity?: number): Promise<RenderResult[]> {
    const started = performance.now();
    const raw = await this.client.renderBatch(image, emotions, intensity === undefined ? {} : { intensity });
    const roundTripMs = round(performance.now() - started);
    return raw.results.map((result) => ({ ...decode(result), roundTripMs }));
  }

  health(): Promise<HealthStatus> {
    return this.client.health();
  }

  async cleanup(): Promise<void> {
    this.client.close();
  }
}

/** Seed 001's factory: the renderer behind the service at `url`. */
export function createLivePortraitRenderer(
  url: string,
  timeoutMs: number = DEFAULT_TIMEOUT_MS,
  options: Omit<ClientOptions, "baseUrl" | "timeoutMs"> = {},
): IAvatarRenderer {
  return new LivePortraitRenderer({ ...options, baseUrl: url, timeoutMs });
}

function decode(raw: RawFrame): RenderResult {
  return { image: Buffer.from(raw.image, "base64"), latencyMs: raw.latencyMs, metadata: raw.metadata };
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
