import { describe, expect, it } from 'vitest'
import { commonEn, commonZh, missingKeys } from '@smartpark/i18n'
import zhCN from './zh-CN'
import en from './en'

describe('translations', () => {
  it('en has every key of zh-CN and no other', () => {
    expect(missingKeys(zhCN, en)).toEqual({ missing: [], extra: [] })
  })
  it('the shared words match too', () => {
    expect(missingKeys(commonZh, commonEn)).toEqual({ missing: [], extra: [] })
  })
  it('no string is left empty', () => {
    const empty = (tree: object): string[] =>
      Object.entries(tree).flatMap(([k, v]) => (typeof v === 'object' ? empty(v).map((e) => `${k}.${e}`) : v === '' ? [k] : []))
    expect(empty(zhCN)).toEqual([])
    expect(empty(en)).toEqual([])
  })
})
