import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import { setCsrfToken, unwrap } from '@smartpark/api'
import { api } from '@/api/client'
import type { Me } from '@/api/types'

/**
 * Who is logged in, in memory only: the session itself is the HttpOnly cookie, the CSRF
 * token lives in the API package, and nothing is written to the browser's storage. After
 * a reload, `restore()` asks the node again.
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
      take(await unwrap(api.GET('/api/v1/auth/me')))
    } catch {
      me.value = null
    } finally {
      checked.value = true
    }
  }

  async function login(username: string, password: string, code?: string): Promise<void> {
    const body = { username, password, ...(code ? { code } : {}) }
    const answer = await unwrap(api.POST('/api/v1/auth/login', { body }))
    setCsrfToken(answer.csrfToken)
    take(await unwrap(api.GET('/api/v1/auth/me')))
  }

  async function logout(): Promise<void> {
    try {
      await unwrap(api.POST('/api/v1/auth/logout'))
    } finally {
      forget()
    }
  }

  /** The node says the session is gone (it expired, or was ended elsewhere). */
  function forget() {
    me.value = null
    setCsrfToken(null)
  }

  return { me, checked, permissions, loggedIn, needsSecondFactor, restore, login, logout, forget }
})
