// Jest runs the compiled seed test (dist/jest/), against the service named by
// LIVEPORTRAIT_SERVICE_URL; `npm run build` first. The package's own name resolves to its build.
const path = require("node:path");

module.exports = {
  rootDir: __dirname,
  testEnvironment: "node",
  testMatch: ["<rootDir>/dist/jest/**/*.test.js"],
  moduleNameMapper: {
    "^@avatar-agents/renderer-client$": path.join(__dirname, "dist/src/index.js"),
  },
  cacheDirectory: path.join(__dirname, "node_modules/.cache/jest"),
};
