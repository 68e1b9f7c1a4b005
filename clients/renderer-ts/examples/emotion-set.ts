// Seed 001, "Usage Examples: Pre-generate Emotion Set", given its renderer and image.
import { promises as fs } from "fs";
import { EmotionType, IAvatarRenderer } from "@avatar-agents/renderer-client";

export async function pregenerateEmotionSet(renderer: IAvatarRenderer, characterImage: Buffer) {
  const emotions = [EmotionType.NEUTRAL, EmotionType.HAPPY, EmotionType.SAD, EmotionType.SURPRISED];

  const results = await renderer.renderBatch(characterImage, emotions, 0.7);

  // Save all variations
  for (let i = 0; i < results.length; i++) {
    await fs.writeFile(`./output_${emotions[i]}.png`, results[i].image);
  }
  return results;
}
