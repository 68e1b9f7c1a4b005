// Seed 001, "Performance Optimization": 3. Batch Processing and 4. Pre-generation.
import { EmotionType, IAvatarRenderer } from "@avatar-agents/renderer-client";
import { EmotionCache } from "./emotion-cache";

// ❌ Slow - multiple HTTP requests
export async function renderOneByOne(renderer: IAvatarRenderer, image: Buffer, emotions: EmotionType[]) {
  for (const emotion of emotions) {
    await renderer.renderFrame(image, { emotion });
  }
}

// ✅ Fast - single batch request
export async function renderAsBatch(renderer: IAvatarRenderer, image: Buffer, emotions: EmotionType[]) {
  await renderer.renderBatch(image, emotions);
}

/** What the seed's onCharacterCreated is given. */
export interface Character {
  id: string;
}

/** The renderer the seed's snippet refers to (the application's own). */
export let renderer: IAvatarRenderer;
export function useRenderer(chosen: IAvatarRenderer) {
  renderer = chosen;
}

export async function onCharacterCreated(character: Character) {
  const emotionCache = new EmotionCache();
  await emotionCache.preloadCharacter(renderer, character.id);
  return emotionCache;
}
