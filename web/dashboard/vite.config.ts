import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// Served by the gateway at /dashboard/ (services/gateway/dashboard.py); `npm run dev` proxies
// the API to a gateway on PM_GATEWAY (default the `make up` one).
export default defineConfig({
  base: "/dashboard/",
  plugins: [react()],
  build: { target: "es2022", sourcemap: false, modulePreload: { polyfill: false } },
  server: {
    proxy: { "/api": process.env.PM_GATEWAY ?? "http://127.0.0.1:8000" },
  },
});
