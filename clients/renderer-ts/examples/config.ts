// Seed 001, "4. Configuration" (src/config/avatar.ts). The examples below read the service's
// URL from here where the seed writes "http://localhost:8001" (its default), so that they run
// against any service: LIVEPORTRAIT_SERVICE_URL=http://127.0.0.1:8080 for a local control API.

// src/config/avatar.ts
export const avatarConfig = {
  rendererType: process.env.AVATAR_RENDERER_TYPE || "liveportrait",
  serviceUrl: process.env.LIVEPORTRAIT_SERVICE_URL || "http://localhost:8001",
  timeout: parseInt(process.env.LIVEPORTRAIT_TIMEOUT || "30000"),
};
