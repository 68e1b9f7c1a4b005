// Seed 001, "2. Install TypeScript Client" (src/avatar/index.ts), in a function: CommonJS has
// no top-level await.
import { createLivePortraitRenderer } from "@avatar-agents/renderer-client";
import { avatarConfig } from "./config";

export async function setUpRenderer() {
  // src/avatar/index.ts
  const renderer = createLivePortraitRenderer(
    avatarConfig.serviceUrl, // the seed's "http://localhost:8001"
    30000, // 30s timeout
  );

  await renderer.initialize();
  return renderer;
}
