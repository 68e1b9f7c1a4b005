// Seed 001, "Usage Examples: Simple Render", in a function (no top-level await in CommonJS).
import { promises as fs } from "fs";
import { createLivePortraitRenderer, EmotionType } from "@avatar-agents/renderer-client";
import { avatarConfig } from "./config";

export async function simpleRender() {
  const renderer = createLivePortraitRenderer(avatarConfig.serviceUrl); // "http://localhost:8001"
  await renderer.initialize();

  const characterImage = await fs.readFile("./character.jpg");

  const result = await renderer.renderFrame(characterImage, {
    emotion: EmotionType.HAPPY,
    intensity: 0.8,
  });

  await fs.writeFile("./output.png", result.image);
  console.log(`Rendered in ${result.latencyMs}ms`);
  return result;
}
