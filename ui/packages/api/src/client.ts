import createClient, { type Middleware } from 'openapi-fetch'
import type { paths } from './generated/edge'
import type { paths as HubPaths } from './generated/hub'
import { ApiError, errorFrom, networkError } from './errors'
import { csrfToken, notifyUnauthenticated } from './session'

const WRITES = new Set(['POST', 'PUT', 'PATCH', 'DELETE'])

/**
 * The one middleware: the session's CSRF token on writes, the user's language, and every
 * failed answer turned into an ApiError (with the API's message and trace id).
 */
export function sessionMiddleware(locale: () => string): Middleware {
  return {
    onRequest({ request }) {
      request.headers.set('Accept-Language', locale())
      const token = csrfToken()
      if (token && WRITES.has(request.method)) request.headers.set('X-CSRF-Token', token)
      return request
    },
    async onResponse({ response, request }) {
      if (response.ok) return response
      const error = await errorFrom(response)
      if (response.status === 401 && !request.url.endsWith('/api/v1/auth/login')) notifyUnauthenticated()
      throw error
    },
    onError({ error }) {
      if (error instanceof ApiError) return error
      return networkError(error)
    },
  }
}

export type EdgeClient = ReturnType<typeof createClient<paths>>

/** A client of the edge's LAN API on this page's origin. */
export function createEdgeClient(locale: () => string, baseUrl = ''): EdgeClient {
  const client = createClient<paths>({ baseUrl, credentials: 'same-origin' })
  client.use(sessionMiddleware(locale))
  return client
}

export type HubClient = ReturnType<typeof createClient<HubPaths>>

/** A client of the hub's API on this page's origin. */
export function createHubClient(locale: () => string, baseUrl = ''): HubClient {
  const client = createClient<HubPaths>({ baseUrl, credentials: 'same-origin' })
  client.use(sessionMiddleware(locale))
  return client
}

/** The answer's data, or the error thrown: for query functions. */
export async function unwrap<T>(request: Promise<{ data?: T; error?: unknown }>): Promise<T> {
  const { data, error } = await request
  if (error !== undefined) throw error instanceof ApiError ? error : new ApiError(500, { code: 'unknown', message: String(error) })
  return data as T
}
