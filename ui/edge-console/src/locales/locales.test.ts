import { describe, expect, it } from 'vitest'
import { baseCompile } from '@intlify/message-compiler'
import { commonEn, commonZh, missingKeys } from '@smartpark/i18n'
import edgeZh from './zh-CN'
import edgeEn from './en'
import hubZh from '../../../hub-console/src/locales/zh-CN'
import hubEn from '../../../hub-console/src/locales/en'

// Every app's words: en key for key with zh-CN, and nothing left empty.
const apps = { 'edge console': [edgeZh, edgeEn], 'hub console': [hubZh, hubEn], 'shared words': [commonZh, commonEn] } as const

const empty = (tree: object): string[] =>
  Object.entries(tree).flatMap(([k, v]) => (typeof v === 'object' ? empty(v).map((e) => `${k}.${e}`) : v === '' ? [k] : []))

describe('translations', () => {
  for (const [name, [zh, en]] of Object.entries(apps)) {
    it(`${name}: en has every key of zh-CN and no other`, () => {
      expect(missingKeys(zh, en)).toEqual({ missing: [], extra: [] })
    })
    it(`${name}: every message compiles (an @ or | must be written as {'@'} or {'|'})`, () => {
      const broken: string[] = []
      const walk = (tree: object, at: string) => {
        for (const [k, v] of Object.entries(tree)) {
          if (typeof v === 'object') walk(v, `${at}${k}.`)
          else baseCompile(String(v), { onError: (e) => broken.push(`${at}${k}: ${e.message}`) })
        }
      }
      walk(zh, '')
      walk(en, '')
      expect(broken).toEqual([])
    })
    it(`${name}: no string is left empty`, () => {
      expect(empty(zh)).toEqual([])
      expect(empty(en)).toEqual([])
    })
  }
})
