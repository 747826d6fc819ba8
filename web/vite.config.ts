import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// The gateway (`herald demo`) listens on 8080 and serves the built app itself.
// During `npm run dev` we forward the backend routes to it so the page can use
// same-origin URLs in both setups.
const backend = process.env.HERALD_BACKEND ?? 'http://127.0.0.1:8080';

export default defineConfig({
  plugins: [react()],
  server: {
    proxy: {
      '/api': backend,
      '/healthz': backend,
      '/ws': { target: backend, ws: true },
    },
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
  },
});
