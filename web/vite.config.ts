import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// The gateway (`herald demo`) listens on 8080 and serves the built app itself.
// During `npm run dev` we forward the backend routes to it so the page can use
// same-origin URLs in both setups.
const backend = process.env.HERALD_BACKEND ?? 'http://127.0.0.1:8080';

// `@herald/client` is the repository's own TypeScript client, compiled from its
// sources (no build step, no npm link): keep in sync with `paths` in tsconfig.app.json.
const webRoot = fileURLToPath(new URL('.', import.meta.url));
const heraldClientSrc = fileURLToPath(new URL('../clients/typescript/src', import.meta.url));

export default defineConfig({
  plugins: [react()],
  resolve: {
    alias: [{ find: /^@herald\/client$/, replacement: `${heraldClientSrc}/index.ts` }],
  },
  server: {
    // The client's sources are outside web/: let the dev server read them.
    fs: { allow: [webRoot, heraldClientSrc] },
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
