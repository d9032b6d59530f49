export { ApiError, errorFrom, networkError, type ErrorBody } from './errors'
export { csrfToken, onUnauthenticated, setCsrfToken } from './session'
export { createEdgeClient, sessionMiddleware, unwrap, type EdgeClient } from './client'
export type { components as EdgeComponents, paths as EdgePaths } from './generated/edge'
