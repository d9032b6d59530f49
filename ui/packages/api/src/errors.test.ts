import { describe, expect, it } from 'vitest'
import { ApiError, errorFrom } from './errors'

describe('errorFrom', () => {
  it('reads the API error shape with its trace id', async () => {
    const r = new Response(JSON.stringify({ code: 'invalid', message: 'limit must be 1 to 10000', traceId: 'abc' }), {
      status: 422,
    })
    const e = await errorFrom(r)
    expect(e).toBeInstanceOf(ApiError)
    expect(e.status).toBe(422)
    expect(e.code).toBe('invalid')
    expect(e.message).toBe('limit must be 1 to 10000')
    expect(e.traceId).toBe('abc')
  })

  it('turns an answer that is not JSON into an error named by its status', async () => {
    const e = await errorFrom(new Response('<html>bad gateway</html>', { status: 502, statusText: 'Bad Gateway' }))
    expect(e.code).toBe('http_502')
    expect(e.message).toBe('Bad Gateway')
  })
})
