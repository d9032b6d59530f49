import { describe, expect, it } from 'vitest'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

// Text a person reads must come from the messages: a template's text nodes and the labels,
// titles and placeholders given as plain attributes must not hold words of their own.
// Language names stay in their own language on purpose.
const ALLOWED = new Set(['中文', 'English', '#'])

function vueFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? vueFiles(join(dir, e.name)) : e.name.endsWith('.vue') ? [join(dir, e.name)] : [],
  )
}

function hardCoded(source: string): string[] {
  const template = source.match(/<template>([\s\S]*)<\/template>/)?.[1] ?? ''
  const found: string[] = []
  // Text between tags, outside {{ }}.
  for (const m of template.matchAll(/>([^<>]+)</g)) {
    const text = m[1]!.replace(/\{\{[\s\S]*?\}\}/g, '').trim()
    if (/[A-Za-z\u4e00-\u9fff]/.test(text) && !ALLOWED.has(text)) found.push(text)
  }
  // Plain (unbound) attributes people read.
  for (const m of template.matchAll(/\s(label|title|placeholder|aria-label|alt)="([^"]*)"/g)) {
    const text = m[2]!.trim()
    if (/[A-Za-z\u4e00-\u9fff]/.test(text) && !ALLOWED.has(text)) found.push(`${m[1]}="${text}"`)
  }
  return found
}

describe('hard-coded text', () => {
  const root = join(__dirname, '..', '..', '..')
  const files = ['edge-console', 'hub-console'].flatMap((app) => vueFiles(join(root, app, 'src'))).concat(vueFiles(join(root, 'packages')))

  it('finds the Vue files, and words in them', () => {
    expect(files.length).toBeGreaterThan(10)
    const sample = '<template><p>Save</p><el-input placeholder="搜索" /><b>{{ t("x") }}</b></template>'
    expect(hardCoded(sample)).toEqual(['Save', 'placeholder="搜索"'])
  })

  for (const file of files) {
    it(`${file.slice(root.length + 1)} has none`, () => {
      expect(hardCoded(readFileSync(file, 'utf8'))).toEqual([])
    })
  }
})
