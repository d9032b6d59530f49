/** The error shape every smartpark API answers with, or a network failure (`status` 0). */
export interface ErrorBody {
  code: string
  message: string
  details?: unknown
  traceId?: string
}

export class ApiError extends Error {
  readonly status: number
  readonly code: string
  readonly details: unknown
  readonly traceId: string | undefined

  constructor(status: number, body: ErrorBody) {
    super(body.message)
    this.name = 'ApiError'
    this.status = status
    this.code = body.code
    this.details = body.details
    this.traceId = body.traceId
  }

  /** The request never got an answer: the node or the LAN is down. */
  get isNetwork(): boolean {
    return this.status === 0
  }
}

/** Reads an error answer; one that is not the API's shape still becomes an ApiError. */
export async function errorFrom(response: Response): Promise<ApiError> {
  let body: ErrorBody = { code: 'http_' + response.status, message: response.statusText || 'request failed' }
  try {
    const parsed: unknown = await response.clone().json()
    if (parsed && typeof parsed === 'object' && 'message' in parsed && 'code' in parsed) {
      body = parsed as ErrorBody
    }
  } catch {
    // Not JSON (a proxy's page, an empty 414): the status says what there is to say.
  }
  return new ApiError(response.status, body)
}

export function networkError(cause: unknown): ApiError {
  const message = cause instanceof Error ? cause.message : String(cause)
  return new ApiError(0, { code: 'network', message })
}
