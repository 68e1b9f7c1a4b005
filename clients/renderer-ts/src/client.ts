import * as http from "node:http";
import * as https from "node:https";

import { RenderServiceError, RenderTimeoutError } from "./errors";
import type {
  ClientOptions,
  EmotionType,
  HealthStatus,
  RawBatch,
  RawFrame,
  RenderOptions,
} from "./types";

/** The control API's API-key header (control_api/security.py). */
export const API_KEY_HEADER = "X-API-Key";
export const DEFAULT_TIMEOUT_MS = 30000;

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/**
 * The render service's HTTP calls, as they are answered (images as base64), plus health,
 * metrics and waiting for the service. One keep-alive connection pool per client; `close()`
 * ends it. Every failure is a `RenderServiceError` carrying the service's `code` and `status`.
 */
export class LivePortraitClient {
  readonly baseUrl: string;
  readonly timeoutMs: number;
  private readonly apiKey?: string;
  private readonly agent: http.Agent;
  private readonly transport: typeof http | typeof https;

  constructor(options: ClientOptions) {
    let url: URL;
    try {
      url = new URL(options.baseUrl);
    } catch {
      throw new TypeError(`baseUrl must be a URL like http://localhost:8080, not ${options.baseUrl}`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new TypeError(`baseUrl must be an http(s) URL, not ${options.baseUrl}`);
    }
    this.baseUrl = url.href.replace(/\/+$/, "");
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.apiKey = options.apiKey ?? process.env.AVATAR_API_KEY ?? undefined;
    this.transport = url.protocol === "https:" ? https : http;
    const agentOptions = {
      keepAlive: options.keepAlive ?? true,
      maxSockets: options.maxSockets ?? 8,
    };
    this.agent = url.protocol === "https:" ? new https.Agent(agentOptions) : new http.Agent(agentOptions);
  }

  // --- the render service --------------------------------------------------------------------

  /** `POST /api/v1/render/frame`: one still of `image` showing `options.emotion`. */
  async renderFrame(image: Buffer, options: RenderOptions = {}): Promise<RawFrame> {
    const body: Record<string, unknown> = { image: toBase64(image), ...renderFields(options) };
    if (options.emotion !== undefined) body.emotion = options.emotion;
    return (await this.json("POST", "/api/v1/render/frame", body)) as RawFrame;
  }

  /** `POST /api/v1/render/batch`: `image` in each of `emotions`, in that order. */
  async renderBatch(
    image: Buffer,
    emotions: EmotionType[],
    options: Omit<RenderOptions, "emotion"> = {},
  ): Promise<RawBatch> {
    const body = { image: toBase64(image), emotions, ...renderFields(options) };
    return (await this.json("POST", "/api/v1/render/batch", body)) as RawBatch;
  }

  /** `GET /health`: `ready` (the render service is warm), `gpuAvailable` and the rest. */
  async health(): Promise<HealthStatus> {
    return (await this.json("GET", "/health")) as HealthStatus;
  }

  /** `GET /metrics`: Prometheus text (`liveportrait_requests_total`, ...). */
  async getMetrics(): Promise<string> {
    const answer = await this.request("GET", "/metrics");
    return answer.body.toString("utf8");
  }

  /** `GET /emotions`: the emotions the service knows, in its order. */
  async emotions(): Promise<string[]> {
    const answer = (await this.json("GET", "/emotions")) as { emotions: Array<{ id: string }> };
    return answer.emotions.map((e) => e.id);
  }

  /** Asks `/health` up to `retries` times, `delayMs` apart, until the service says `ready`;
   * false when it never did (or never answered). */
  async waitForHealthy(retries = 20, delayMs = 3000): Promise<boolean> {
    for (let attempt = 0; attempt < retries; attempt++) {
      try {
        if ((await this.health()).ready) return true;
      } catch (error) {
        if (error instanceof RenderServiceError && error.status === 401) throw error;
      }
      if (attempt < retries - 1) await sleep(delayMs);
    }
    return false;
  }

  /** Ends the kept-alive connections. */
  close(): void {
    this.agent.destroy();
  }

  // --- HTTP ---------------------------------------------------------------------------------

  async json(method: string, path: string, body?: unknown): Promise<unknown> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const answer = await this.request(method, path, payload);
    try {
      return JSON.parse(answer.body.toString("utf8"));
    } catch {
      throw new RenderServiceError(
        "invalid_response",
        answer.status,
        `${method} ${path} answered ${answer.status} with a body that is not JSON`,
      );
    }
  }

  /** One request; resolves with a 2xx answer, rejects with RenderServiceError otherwise. */
  request(method: string, path: string, body?: Buffer): Promise<Answer> {
    const url = new URL(this.baseUrl + path);
    const headers: http.OutgoingHttpHeaders = { Accept: "application/json" };
    if (this.apiKey) headers[API_KEY_HEADER] = this.apiKey;
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      headers["Content-Length"] = body.length;
    }
    return new Promise<Answer>((resolve, reject) => {
      let settled = false;
      const settle = (error: Error | null, answer?: Answer): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (error) reject(error);
        else resolve(answer as Answer);
      };
      const request = this.transport.request(url, { method, headers, agent: this.agent }, (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("error", (error) => settle(networkError(method, path, error)));
        response.on("end", () => {
          const answer = { status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(chunks) };
          settle(answer.status >= 200 && answer.status < 300 ? null : serviceError(method, path, answer), answer);
        });
      });
      const timer = setTimeout(() => {
        const error = new RenderTimeoutError(
          `${method} ${path} took longer than ${this.timeoutMs} ms (timeoutMs)`,
        );
        settle(error);
        request.destroy(error);
      }, this.timeoutMs);
      request.on("error", (error: NodeJS.ErrnoException) => {
        // The service may answer (413) and close before the whole body is sent: that answer,
        // being read, wins over the broken pipe; give it a moment.
        if (error.code === "EPIPE" || error.code === "ECONNRESET") {
          setTimeout(() => settle(networkError(method, path, error)), 200);
        } else {
          settle(networkError(method, path, error));
        }
      });
      request.end(body);
    });
  }
}

export function createLivePortraitClient(options: ClientOptions): LivePortraitClient {
  return new LivePortraitClient(options);
}

// --- helpers ---------------------------------------------------------------------------------

function renderFields(options: RenderOptions): Record<string, unknown> {
  const fields: Record<string, unknown> = {};
  for (const name of ["intensity", "format", "width", "height", "renderer"] as const) {
    if (options[name] !== undefined) fields[name] = options[name];
  }
  return fields;
}

function toBase64(image: Buffer): string {
  if (!((image as unknown) instanceof Uint8Array)) {
    throw new TypeError("image must be a Buffer with the PNG, JPEG or WebP file's bytes");
  }
  return Buffer.from(image.buffer, image.byteOffset, image.byteLength).toString("base64");
}

function serviceError(method: string, path: string, answer: Answer): RenderServiceError {
  const retryAfter = Number(answer.headers["retry-after"]);
  const retryAfterMs = Number.isFinite(retryAfter) && retryAfter >= 0 ? retryAfter * 1000 : undefined;
  let error: { code?: unknown; message?: unknown; valid?: unknown; retryable?: unknown } | undefined;
  try {
    const parsed = JSON.parse(answer.body.toString("utf8"));
    error = typeof parsed?.error === "object" && parsed.error !== null ? parsed.error : undefined;
  } catch {
    error = undefined;
  }
  if (error && typeof error.code === "string") {
    return new RenderServiceError(error.code, answer.status, String(error.message ?? error.code), {
      retryAfterMs,
      valid: Array.isArray(error.valid) ? error.valid.map(String) : undefined,
      retryable: typeof error.retryable === "boolean" ? error.retryable : undefined,
    });
  }
  return new RenderServiceError(
    "http_error",
    answer.status,
    `${method} ${path} answered ${answer.status}`,
    { retryAfterMs },
  );
}

function networkError(method: string, path: string, error: Error): RenderServiceError {
  if (error instanceof RenderServiceError) return error;
  const code = (error as NodeJS.ErrnoException).code;
  return new RenderServiceError(
    "network_error",
    0,
    `${method} ${path} failed: ${code ?? ""} ${error.message}`.replace(/\s+/g, " ").trim(),
    { cause: error },
  );
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
