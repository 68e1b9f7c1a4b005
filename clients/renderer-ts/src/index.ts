/**
 * @avatar-agents/renderer-client: seed 001's IAvatarRenderer over the Avatar Agents render
 * service (`POST /api/v1/render/frame` and `/batch` of the control API).
 */
export { API_KEY_HEADER, DEFAULT_TIMEOUT_MS, LivePortraitClient, createLivePortraitClient } from "./client";
export { RenderServiceError, RenderTimeoutError } from "./errors";
export { LivePortraitRenderer, createLivePortraitRenderer } from "./renderer";
export { EmotionType } from "./types";
export type {
  ClientOptions,
  HealthStatus,
  IAvatarRenderer,
  ImageFormat,
  RawBatch,
  RawFrame,
  RenderMetadata,
  RenderOptions,
  RenderResult,
  RenderServiceStatus,
  RenderTimings,
} from "./types";
