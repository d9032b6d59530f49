import { describe, expect, it } from 'vitest'
import { seriesOf } from './series'

describe('seriesOf', () => {
  it('takes raw samples by value and rollups by their mean, in milliseconds', () => {
    expect(
      seriesOf([
        { ts: 2_000_000, value: 1.5 },
        { ts: 3_000_000, value: true },
        { ts: 4_000_000, value: 'text' },
        { bucket: 60_000_000, avg: 7 },
        { bucket: 120_000_000, avg: null },
      ]),
    ).toEqual([
      [2000, 1.5],
      [3000, 1],
      [4000, null],
      [60000, 7],
      [120000, null],
    ])
  })
})
