// What seed 001's EmotionCache assumes: a character's portrait by id. Here a file
// `<id>.jpg` in CHARACTERS_DIR (default ./characters).
import { promises as fs } from "fs";
import * as path from "path";

export async function loadCharacterImage(characterId: string): Promise<Buffer> {
  if (!/^[A-Za-z0-9_-]+$/.test(characterId)) {
    throw new Error(`not a character id: ${characterId}`);
  }
  return fs.readFile(path.join(process.env.CHARACTERS_DIR || "./characters", `${characterId}.jpg`));
}
