import { computed, createApp } from 'vue'
import { createPinia } from 'pinia'
import { QueryClient, VueQueryPlugin } from '@tanstack/vue-query'
import { ApiError, onUnauthenticated, useSessionStore } from '@smartpark/api'
import { setupI18n } from '@smartpark/i18n'
import { installAccess } from '@smartpark/access'
import 'element-plus/theme-chalk/base.css'
import App from './App.vue'
import { router } from './router'
import { messages } from './locales'
import '@smartpark/layout/src/base.css'

const app = createApp(App)
const pinia = createPinia()
app.use(pinia)
setupI18n(app, messages)
const session = useSessionStore()
installAccess(
  app,
  computed(() => session.permissions),
)

const queryClient = new QueryClient({
  defaultOptions: {
    queries: {
      // A refused or missing thing is not retried; a lost connection is, on its own.
      retry: (count, error) => (error instanceof ApiError && !error.isNetwork ? false : count < 1000),
      retryDelay: (count) => Math.min(1000 * 2 ** count, 10_000),
      staleTime: 2_000,
      refetchOnWindowFocus: true,
    },
  },
})
app.use(VueQueryPlugin, { queryClient })
app.use(router)

onUnauthenticated(() => {
  session.forget()
  queryClient.clear()
  const here = router.currentRoute.value
  if (!here.meta.public) void router.push({ path: '/login', query: { next: here.fullPath, ended: '1' } })
})

app.mount('#app')
