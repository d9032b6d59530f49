import { describe, expect, it } from 'vitest'
import { fenOf, fixedPoint, trimmed, yuan } from './money'

describe('money', () => {
  it('shows fen as yuan with two places', () => {
    expect(yuan(0)).toBe('0.00')
    expect(yuan(5)).toBe('0.05')
    expect(yuan(1250)).toBe('12.50')
    expect(yuan(-300)).toBe('-3.00')
    expect(yuan(-5)).toBe('-0.05')
    expect(yuan(-123456)).toBe('-1234.56')
  })
  it('shows large amounts exactly, with thousands when asked', () => {
    // 10^12 fen, the most the API takes, and the largest integer a double holds exactly.
    expect(yuan(1_000_000_000_000)).toBe('10000000000.00')
    expect(yuan(1_000_000_000_000, true)).toBe('10,000,000,000.00')
    expect(yuan(Number.MAX_SAFE_INTEGER)).toBe('90071992547409.91')
    expect(yuan(123456789, true)).toBe('1,234,567.89')
    expect(yuan(-123456789, true)).toBe('-1,234,567.89')
    expect(yuan(99999, true)).toBe('999.99')
  })
  it('reads yuan into fen without floating point, and refuses what is not an amount', () => {
    expect(fenOf('12.5')).toBe(1250)
    expect(fenOf('12.3')).toBe(1230)
    expect(fenOf('12.05')).toBe(1205)
    expect(fenOf(' 8 ')).toBe(800)
    expect(fenOf('0.1')).toBe(10)
    // 0.1 + 0.2 is not 0.3 in floating point; here it is read as digits.
    expect(fenOf('0.29')).toBe(29)
    expect(fenOf('1.15')).toBe(115)
    expect(fenOf('9999999999.99')).toBe(999_999_999_999)
    for (const bad of ['1.234', '1.005', 'abc', '-1', '1e3', '', '.5', '1.', '1,000', '12 3', '99999999999']) {
      expect(fenOf(bad), bad).toBeNull()
    }
  })
  it('writes fixed-point integers of any scale', () => {
    expect(fixedPoint(6532, 4)).toBe('0.6532')
    expect(fixedPoint(12345, 3)).toBe('12.345')
    expect(fixedPoint(-7, 3)).toBe('-0.007')
    expect(fixedPoint(42, 0)).toBe('42')
    expect(trimmed(500, 2)).toBe('5')
    expect(trimmed(5, 2)).toBe('0.05')
    expect(trimmed(1250, 2)).toBe('12.5')
    expect(trimmed(0, 2)).toBe('0')
  })
})
