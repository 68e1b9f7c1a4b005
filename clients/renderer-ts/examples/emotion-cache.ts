// Seed 001, "Usage Examples: Emotion Caching Strategy", as written.
import { EmotionType, IAvatarRenderer } from "@avatar-agents/renderer-client";
import { loadCharacterImage } from "./characters";

export class EmotionCache {
  private cache = new Map<string, Buffer>();

  async getOrRender(
    renderer: IAvatarRenderer,
    characterId: string,
    emotion: EmotionType,
    intensity: number,
  ): Promise<Buffer> {
    const key = `${characterId}_${emotion}_${intensity}`;

    if (this.cache.has(key)) {
      return this.cache.get(key)!;
    }

    const characterImage = await loadCharacterImage(characterId);
    const result = await renderer.renderFrame(characterImage, {
      emotion,
      intensity,
    });

    this.cache.set(key, result.image);
    return result.image;
  }

  async preloadCharacter(renderer: IAvatarRenderer, characterId: string): Promise<void> {
    const characterImage = await loadCharacterImage(characterId);
    const emotions = Object.values(EmotionType);

    const results = await renderer.renderBatch(characterImage, emotions, 0.7);

    results.forEach((result, index) => {
      const key = `${characterId}_${emotions[index]}_0.7`;
      this.cache.set(key, result.image);
    });
  }
}
