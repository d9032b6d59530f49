import { describe, expect, it } from 'vitest'
import { dayText, parseDay } from './times'

describe('schedule times', () => {
  it('reads a day as people type it and writes it back the same way', () => {
    const day = parseDay('08:00-12:00, 13:30–18:00，19:00-24:00')
    expect(day).toEqual([
      { start_minute: 480, end_minute: 720 },
      { start_minute: 810, end_minute: 1080 },
      { start_minute: 1140, end_minute: 1440 },
    ])
    expect(dayText(day ?? [])).toBe('08:00-12:00, 13:30-18:00, 19:00-24:00')
    expect(parseDay('')).toEqual([])
  })
  it('refuses what is not a span within a day', () => {
    for (const bad of ['18:00-08:00', '08:00', '8-18', '08:60-09:00', '23:00-24:30']) expect(parseDay(bad), bad).toBeNull()
  })
})
