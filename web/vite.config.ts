import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// The gateway (`herald demo`) listens on 8080 and serves the built app itself.
// During `npm run dev` we forward the backend routes to it so the page can use
// same-origin URLs in both setups.
const backend = process.env.HERALD_BACKEND ?? 'http://127.0.0.1:8080';

// `@herald/client` is the repository's own TypeScript client, consumed as it is
// published: package.json depends on `file:../clients/typescript` (build it first,
// `npm run build` there), and its `exports` map picks the built ES module in dist/.
// npm links the package, so its files live outside web/: let the dev server read them.
const webRoot = fileURLToPath(new URL('.', import.meta.url));
const heraldClientDist = fileURLToPath(new URL('../clients/typescript/dist', import.meta.url));

export default defineConfig({
  plugins: [react()],
  server: {
    fs: { allow: [webRoot, heraldClientDist] },
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
