/** An error answered by the render service, or met on the way to it. */
export class RenderServiceError extends Error {
  /** The service's stable code (`invalid_emotion`, `no_face`, `render_busy`, ...), or this
   * client's: `timeout`, `network_error`, `invalid_response`, `not_ready`, `http_error`. */
  readonly code: string;
  /** The HTTP status; 0 when no answer came (a timeout, a refused connection). */
  readonly status: number;
  /** Whether the same request may succeed later (a 503 or 429, a timeout, a network error). */
  readonly retryable: boolean;
  /** What the service's Retry-After header asked for, in milliseconds. */
  readonly retryAfterMs?: number;
  /** Valid values, where the service lists them (emotions, formats, renderers). */
  readonly valid?: string[];

  constructor(
    code: string,
    status: number,
    message: string,
    extra: { retryable?: boolean; retryAfterMs?: number; valid?: string[]; cause?: unknown } = {},
  ) {
    super(message, extra.cause !== undefined ? { cause: extra.cause } : undefined);
    this.name = "RenderServiceError";
    this.code = code;
    this.status = status;
    this.retryable = extra.retryable ?? (status === 0 || status === 429 || status === 503);
    this.retryAfterMs = extra.retryAfterMs;
    this.valid = extra.valid;
  }
}

/** The request did not finish within the client's timeout. */
export class RenderTimeoutError extends RenderServiceError {
  constructor(message: string) {
    super("timeout", 0, message, { retryable: true });
    this.name = "RenderTimeoutError";
  }
}
