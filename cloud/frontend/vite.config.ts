import react from "@vitejs/plugin-react";
import { defineConfig } from "vitest/config";

// Relative asset paths: the cloud API serves dist/ at its root, nginx may serve it
// under a prefix, and neither needs a rebuild for it.
export default defineConfig({
  base: "./",
  plugins: [react()],
  build: { outDir: "dist", sourcemap: false, chunkSizeWarningLimit: 800 },
  server: {
    proxy: { "/v1": process.env.INTELLIOPTICS_API_URL ?? "http://127.0.0.1:8000" },
  },
  test: {
    environment: "jsdom",
    include: ["src/**/*.test.{ts,tsx}"],
  },
});
