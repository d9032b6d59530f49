/**
 * The session's CSRF token, held in memory only (never in storage): the cookie carries the
 * session, and every write must prove it comes from our page with this token. After a
 * reload `GET /api/v1/auth/me` gives it again.
 */
let csrf: string | null = null
const listeners = new Set<() => void>()

export function setCsrfToken(token: string | null | undefined): void {
  csrf = token ?? null
}

export function csrfToken(): string | null {
  return csrf
}

/** Called when an answer says the session is gone (401), so the app can ask for a login. */
export function onUnauthenticated(listener: () => void): () => void {
  listeners.add(listener)
  return () => listeners.delete(listener)
}

export function notifyUnauthenticated(): void {
  for (const l of listeners) l()
}
