// What every console does at its start: the store, the words, who may do what, server data
// through TanStack Query, the router with its login guard, and a way back to the login page
// when the session ends.
import { computed, createApp, type Component } from 'vue'
import { createPinia } from 'pinia'
import { QueryClient, VueQueryPlugin } from '@tanstack/vue-query'
import type { Router } from 'vue-router'
import { ApiError, onUnauthenticated, useSessionStore } from '@smartpark/api'
import { setupI18n } from '@smartpark/i18n'
import { installAccess } from '@smartpark/access'

declare module 'vue-router' {
  interface RouteMeta {
    /** Shown without a login. */
    public?: boolean
    /** The permission the page needs, or several of which any will do (the API checks
     * again on every request). */
    permission?: string | readonly string[]
    /** i18n key of the page's title. */
    title?: string
  }
}

/** Sends a visitor without a session to the login page, one who must set up a second factor
 * to their account, and one without a page's permission to their account. */
export function guardRoutes(router: Router): void {
  router.beforeEach(async (to) => {
    const session = useSessionStore()
    if (!session.checked) await session.restore()
    if (to.meta.public) return true
    if (!session.loggedIn) return { path: '/login', query: { next: to.fullPath } }
    if (session.needsSecondFactor && to.path !== '/account') return '/account'
    const needed = to.meta.permission === undefined ? [] : ([] as string[]).concat(to.meta.permission)
    if (needed.length > 0 && !needed.some((p) => session.permissions.includes(p))) return '/account'
    return true
  })
}

export function startConsole<M extends object>(root: Component, router: Router, messages: { 'zh-CN': M; en: M }): void {
  const app = createApp(root)
  app.use(createPinia())
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
  guardRoutes(router)
  app.use(router)
  onUnauthenticated(() => {
    session.forget()
    queryClient.clear()
    const here = router.currentRoute.value
    if (!here.meta.public) void router.push({ path: '/login', query: { next: here.fullPath, ended: '1' } })
  })
  app.mount('#app')
}
