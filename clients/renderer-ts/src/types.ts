/**
 * The types of seed 001's avatar renderer contract, as the Avatar Agents render service
 * (`POST /api/v1/render/frame`, `POST /api/v1/render/batch`) answers them.
 */

/** The emotions the service renders: exactly the project's list (avatar_runtime EMOTIONS). */
export enum EmotionType {
  NEUTRAL = "neutral",
  HAPPY = "happy",
  SAD = "sad",
  CONCERNED = "concerned",
  SURPRISED = "surprised",
  ANGRY = "angry",
  REASSURING = "reassuring",
}

export type ImageFormat = "png" | "jpeg" | "webp";

export interface RenderOptions {
  /** Default `neutral`. */
  emotion?: EmotionType;
  /** 0..1, default 0.7. */
  intensity?: number;
  /** Default `png`. */
  format?: ImageFormat;
  /** Pixels, 64..1024, default 512. */
  width?: number;
  /** Pixels, 64..1024, default 512. */
  height?: number;
  /** A renderer the service offers (its default when left out). */
  renderer?: string;
}

/** Where the service's time for a result went, in milliseconds. */
export interface RenderTimings {
  queueMs?: number;
  decodeMs?: number;
  analyseMs?: number;
  renderMs?: number;
  encodeMs?: number;
}

export interface RenderMetadata {
  emotion: EmotionType;
  intensity: number;
  renderer: string;
  width: number;
  height: number;
  format: ImageFormat;
  /** True when this request analysed the portrait; false when a worker had it cached. */
  analysed?: boolean;
  /** True for the warm-up probe (a featureless image, answered as it is). */
  warmup?: boolean;
  timings?: RenderTimings;
}

export interface RenderResult {
  /** The encoded picture (PNG, JPEG or WebP bytes). */
  image: Buffer;
  /** The service's own time: decoding, analysing (or finding in cache), rendering, encoding. */
  latencyMs: number;
  metadata: RenderMetadata;
  /** This client's time for the request (network and JSON included); batch: the whole call. */
  roundTripMs?: number;
}

export interface RenderServiceStatus {
  ready: boolean;
  state: "warming" | "ready" | "failed" | "restarting";
  renderer: string;
  renderers: string[];
  workers: number;
  workersUp: number;
  busy: number;
  queued: number;
  crashes?: number;
  error?: { code: string; message: string };
}

export interface HealthStatus {
  /** `ok`, or `degraded` when LiveKit is unreachable or no renderer can load. */
  status: "ok" | "degraded";
  /** The render service is warm and has a worker. */
  ready: boolean;
  gpuAvailable: boolean;
  version: string;
  uptime_s?: number;
  render?: RenderServiceStatus;
  renderers?: Array<{ name: string; available: boolean; reason?: string; emotions?: string[] }>;
  [field: string]: unknown;
}

/** The avatar renderer contract of seed 001. */
export interface IAvatarRenderer {
  /** Checks the service answers and accepts the credentials, then waits (up to the timeout)
   * until it is warm. */
  initialize(): Promise<void>;
  renderFrame(image: Buffer, options?: RenderOptions): Promise<RenderResult>;
  /** One portrait in several emotions, in one request (the portrait analysed once); the
   * results are in the order of `emotions`. */
  renderBatch(image: Buffer, emotions: EmotionType[], intensity?: number): Promise<RenderResult[]>;
  health(): Promise<HealthStatus>;
  /** Closes the kept-alive connections. */
  cleanup(): Promise<void>;
}

export interface ClientOptions {
  /** `http://host:port` of the control API. */
  baseUrl: string;
  /** One of its AVATAR_API_KEYS; default: the AVATAR_API_KEY environment variable. */
  apiKey?: string;
  /** Per request, default 30000. */
  timeoutMs?: number;
  /** Keep connections open between requests (default true). */
  keepAlive?: boolean;
  /** Most sockets kept per host (default 8). */
  maxSockets?: number;
}

/** The raw answer of `POST /api/v1/render/frame` (and each of a batch's results). */
export interface RawFrame {
  image: string;
  format: ImageFormat;
  latencyMs: number;
  metadata: RenderMetadata;
}

export interface RawBatch {
  results: RawFrame[];
  latencyMs: number;
}
