// Seed 001, "3. Use in Avatar System" (src/avatar/AvatarManager.ts), as written.
import { IAvatarRenderer, EmotionType } from "@avatar-agents/renderer-client";
import { createLivePortraitRenderer } from "@avatar-agents/renderer-client";

/** What the seed's AvatarManager reads from its configuration. */
export interface AvatarConfig {
  livePortraitUrl: string;
  timeout: number;
}

// src/avatar/AvatarManager.ts
export class AvatarManager {
  private renderer: IAvatarRenderer;

  async initialize(config: AvatarConfig) {
    // Create renderer based on config
    this.renderer = createLivePortraitRenderer(config.livePortraitUrl, config.timeout);

    await this.renderer.initialize();

    // Verify GPU availability
    const health = await this.renderer.health();
    if (!health.gpuAvailable) {
      console.warn("GPU not available - rendering will be slower");
    }
  }

  async renderEmotion(
    characterImage: Buffer,
    emotion: EmotionType,
    intensity: number = 0.7,
  ): Promise<Buffer> {
    const result = await this.renderer.renderFrame(characterImage, {
      emotion,
      intensity,
      format: "png",
      width: 512,
      height: 512,
    });

    console.log(`Rendered ${emotion} in ${result.latencyMs}ms`);
    return result.image;
  }

  async preloadEmotions(characterImage: Buffer): Promise<Map<EmotionType, Buffer>> {
    const emotions = Object.values(EmotionType);

    const results = await this.renderer.renderBatch(characterImage, emotions, 0.7);

    const emotionMap = new Map<EmotionType, Buffer>();
    results.forEach((result, index) => {
      emotionMap.set(emotions[index], result.image);
    });

    return emotionMap;
  }
}
