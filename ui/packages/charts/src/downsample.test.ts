import { describe, expect, it } from 'vitest'
import { lttb, type Point } from './downsample'

describe('lttb', () => {
  const series: Point[] = Array.from({ length: 10_000 }, (_, i) => [i, Math.sin(i / 100) * (i === 5000 ? 50 : 1)])

  it('keeps the first and last points and at most the threshold', () => {
    const out = lttb(series, 500)
    expect(out.length).toBe(500)
    expect(out[0]).toEqual(series[0])
    expect(out.at(-1)).toEqual(series.at(-1))
  })

  it('keeps a lone peak', () => {
    const out = lttb(series, 200)
    expect(out.some(([x]) => x === 5000)).toBe(true)
  })

  it('returns short series as they are', () => {
    expect(lttb(series.slice(0, 10), 500)).toEqual(series.slice(0, 10))
  })
})
