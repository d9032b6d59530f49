import { fileURLToPath, URL } from 'node:url'
import { defineConfig } from 'vitest/config'
import vue from '@vitejs/plugin-vue'

// Unit tests of every package and app of the workspace.
export default defineConfig({
  plugins: [vue()],
  resolve: { alias: { '@': fileURLToPath(new URL('./edge-console/src', import.meta.url)) } },
  test: {
    environment: 'jsdom',
    include: ['packages/*/src/**/*.test.ts', 'edge-console/src/**/*.test.ts', 'hub-console/src/**/*.test.ts'],
  },
})
