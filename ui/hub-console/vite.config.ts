import { fileURLToPath, URL } from 'node:url'
import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'
import Components from 'unplugin-vue-components/vite'
import { ElementPlusResolver } from 'unplugin-vue-components/resolvers'

// `npm run dev` proxies the API to a running hub (SMARTPARK_HUB).
const hub = process.env.SMARTPARK_HUB ?? 'http://127.0.0.1:8443'

export default defineConfig({
  plugins: [
    vue(),
    // Element Plus components and their styles, only those used.
    Components({ resolvers: [ElementPlusResolver({ importStyle: 'css' })], dts: false, dirs: [] }),
  ],
  resolve: { alias: { '@': fileURLToPath(new URL('./src', import.meta.url)) } },
  server: { proxy: { '/api': { target: hub, changeOrigin: false } } },
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
