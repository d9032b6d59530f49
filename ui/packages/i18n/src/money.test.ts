import { describe, expect, it } from 'vitest'
import { fenOf, yuan } from './money'

describe('money', () => {
  it('shows fen as yuan with two places', () => {
    expect(yuan(0)).toBe('0.00')
    expect(yuan(5)).toBe('0.05')
    expect(yuan(1250)).toBe('12.50')
    expect(yuan(-300)).toBe('-3.00')
  })
  it('reads yuan into fen without floating point, and refuses what is not an amount', () => {
    expect(fenOf('12.5')).toBe(1250)
    expect(fenOf('12.05')).toBe(1205)
    expect(fenOf(' 8 ')).toBe(800)
    expect(fenOf('0.1')).toBe(10)
    expect(fenOf('1.005')).toBeNull()
    expect(fenOf('-1')).toBeNull()
    expect(fenOf('1e3')).toBeNull()
    expect(fenOf('')).toBeNull()
  })
})
