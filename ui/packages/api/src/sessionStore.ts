import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import createClient from 'openapi-fetch'
import type { components, paths } from './generated/edge'
import { sessionMiddleware, unwrap } from './client'
import { setCsrfToken } from './session'

/** The account routes, the same on every smartpark API (the accounts crate serves them). */
type AuthPaths = Pick<
  paths,
  | '/api/v1/auth/login'
  | '/api/v1/auth/logout'
  | '/api/v1/auth/me'
  | '/api/v1/auth/password'
  | '/api/v1/auth/totp/setup'
  | '/api/v1/auth/totp/confirm'
>

export type Me = components['schemas']['Me']

/** A client of the account routes on this page's origin, in the page's language. */
export const authApi = (() => {
  const client = createClient<AuthPaths>({ baseUrl: '', credentials: 'same-origin' })
  client.use(sessionMiddleware(() => globalThis.document?.documentElement.lang || 'zh-CN'))
  return {
    me: () => unwrap(client.GET('/api/v1/auth/me')),
    login: (body: { username: string; password: string; code?: string }) =>
      unwrap(client.POST('/api/v1/auth/login', { body })),
    logout: () => unwrap(client.POST('/api/v1/auth/logout')),
    changePassword: (currentPassword: string, newPassword: string) =>
      unwrap(client.POST('/api/v1/auth/password', { body: { currentPassword, newPassword } })),
    totpSetup: () => unwrap(client.POST('/api/v1/auth/totp/setup')),
    totpConfirm: (code: string) => unwrap(client.POST('/api/v1/auth/totp/confirm', { body: { code } })),
  }
})()

/**
 * Who is logged in, in memory only: the session itself is the HttpOnly cookie, the CSRF
 * token lives in this package, and nothing is written to the browser's storage. After a
 * reload, `restore()` asks the server again.
 */
export const useSessionStore = defineStore('session', () => {
  const me = ref<Me | null>(null)
  const checked = ref(false)

  const permissions = computed<readonly string[]>(() => me.value?.permissions ?? [])
  const loggedIn = computed(() => me.value !== null)
  const needsSecondFactor = computed(() => me.value?.secondFactor === 'enrollment_required')

  function take(next: Me) {
    me.value = next
    setCsrfToken(next.csrfToken ?? null)
  }

  async function restore(): Promise<void> {
    try {
      take(await authApi.me())
    } catch {
      me.value = null
    } finally {
      checked.value = true
    }
  }

  async function login(username: string, password: string, code?: string): Promise<void> {
    const answer = await authApi.login({ username, password, ...(code ? { code } : {}) })
    setCsrfToken(answer.csrfToken)
    take(await authApi.me())
  }

  async function logout(): Promise<void> {
    try {
      await authApi.logout()
    } finally {
      forget()
    }
  }

  /** The server says the session is gone (it expired, or was ended elsewhere). */
  function forget() {
    me.value = null
    setCsrfToken(null)
  }

  return { me, checked, permissions, loggedIn, needsSecondFactor, restore, login, logout, forget }
})
