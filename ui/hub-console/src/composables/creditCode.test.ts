import { describe, expect, it } from 'vitest'
import { isCreditCode } from './creditCode'

describe('isCreditCode', () => {
  it('takes a code whose check character fits, and no other', () => {
    expect(isCreditCode('91110108MA01C2D3EG')).toBe(true)
    expect(isCreditCode('91350100M000100Y43')).toBe(true)
    expect(isCreditCode('91110108MA01C2D3E0')).toBe(false)
    // Too short, and a letter the code never uses (I).
    expect(isCreditCode('91110108MA01C2D3E')).toBe(false)
    expect(isCreditCode('91110108MA01C2D3IG')).toBe(false)
  })
})
