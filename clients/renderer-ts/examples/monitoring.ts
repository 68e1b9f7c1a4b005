// Seed 001, "Monitoring": Health Checks (every intervalMs, 30 s as in the seed) and Metrics.
import { createLivePortraitClient, IAvatarRenderer } from "@avatar-agents/renderer-client";
import { avatarConfig } from "./config";

export function watchHealth(renderer: IAvatarRenderer, intervalMs = 30000) {
  return setInterval(async () => {
    const health = await renderer.health();

    if (!health.ready) {
      console.error("Renderer not ready!");
      // Alert or fallback logic
    }
  }, intervalMs); // Check every 30s
}

export async function readMetrics() {
  const client = createLivePortraitClient({ baseUrl: avatarConfig.serviceUrl }); // "http://localhost:8001"
  const metrics = await client.getMetrics();

  // Parse Prometheus metrics
  // liveportrait_requests_total
  // liveportrait_request_duration_seconds
  // liveportrait_errors_total
  return metrics;
}
