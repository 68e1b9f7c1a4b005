// Seed 001, "Testing", as written; the imports it assumes added, and the service's URL from the
// seed's own configuration (examples/config.ts; its default is the seed's
// "http://localhost:8001").
import { describe, it, expect } from "@jest/globals";
import { promises as fs } from "fs";
import { createLivePortraitRenderer, EmotionType, IAvatarRenderer } from "@avatar-agents/renderer-client";
import { avatarConfig } from "../examples/config";

describe("Avatar Integration", () => {
  let renderer: IAvatarRenderer;

  beforeAll(async () => {
    renderer = createLivePortraitRenderer(avatarConfig.serviceUrl);
    await renderer.initialize();
  });

  it("should render happy emotion", async () => {
    const image = await fs.readFile("./test-portrait.jpg");

    const result = await renderer.renderFrame(image, {
      emotion: EmotionType.HAPPY,
      intensity: 0.7,
    });

    expect(result.image).toBeInstanceOf(Buffer);
    expect(result.latencyMs).toBeLessThan(100);
    expect(result.metadata.emotion).toBe(EmotionType.HAPPY);
  });

  afterAll(async () => {
    await renderer.cleanup();
  });
});
