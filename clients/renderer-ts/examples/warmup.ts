// Seed 001, "Performance Optimization: 1. Warm-up on Startup". The one change: the dummy
// image is a real grey 512x512 PNG made without node-canvas (greyPng), where the seed draws it
// with createCanvas: the same picture (#888, 512x512, PNG).
import { EmotionType, IAvatarRenderer } from "@avatar-agents/renderer-client";
import { greyPng } from "./grey-png";

export async function warmupRenderer(renderer: IAvatarRenderer) {
  console.log("Warming up renderer...");

  // Create dummy image
  const dummyImage = greyPng(512, 512, 0x88);

  // Warm-up render
  await renderer.renderFrame(dummyImage, {
    emotion: EmotionType.NEUTRAL,
  });

  console.log("Renderer warmed up");
}
