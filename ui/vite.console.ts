import { fileURLToPath, URL } from 'node:url'
import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'
import Components from 'unplugin-vue-components/vite'
import { ElementPlusResolver } from 'unplugin-vue-components/resolvers'

/**
 * The build of a console: `appUrl` is the app's `vite.config.ts` (its `import.meta.url`),
 * `api` where `npm run dev` proxies `/api` to (a running edge or hub).
 */
export function consoleConfig(appUrl: string, api: string) {
  return defineConfig({
    plugins: [
      vue(),
      // Element Plus components and their styles, only those used.
      Components({ resolvers: [ElementPlusResolver({ importStyle: 'css' })], dts: false, dirs: [] }),
    ],
    resolve: { alias: { '@': fileURLToPath(new URL('./src', appUrl)) } },
    server: { proxy: { '/api': { target: api, changeOrigin: false } } },
    build: {
      outDir: 'dist',
      // Vite's warning stays on at its default: a chunk over 500 kB is a regression.
      sourcemap: false,
      rollupOptions: {
        output: {
          manualChunks(id) {
            if (id.includes('node_modules/echarts') || id.includes('node_modules/zrender')) return 'charts'
            return undefined
          },
        },
      },
    },
  })
}
