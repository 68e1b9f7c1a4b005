// Seed 001, "Troubleshooting": Service Not Ready, GPU Memory Issues, Connection Timeouts.
import { createLivePortraitClient, createLivePortraitRenderer, EmotionType, IAvatarRenderer } from "@avatar-agents/renderer-client";
import { avatarConfig } from "./config";

export async function checkServiceStarted() {
  const client = createLivePortraitClient({ baseUrl: avatarConfig.serviceUrl }); // "http://localhost:8001"

  if (!(await client.waitForHealthy(20, 3000))) {
    throw new Error("LivePortrait service failed to start");
  }
}

// Reduce batch size or image resolution:
export async function renderSmaller(renderer: IAvatarRenderer, image: Buffer) {
  const result = await renderer.renderFrame(image, {
    emotion: EmotionType.HAPPY,
    width: 256, // Smaller resolution
    height: 256,
  });
  return result;
}

// Increase timeout for slow GPUs:
export function rendererForSlowGpus() {
  const renderer = createLivePortraitRenderer(
    avatarConfig.serviceUrl, // "http://localhost:8001"
    60000, // 60s timeout
  );
  return renderer;
}
