import { describe, expect, it } from 'vitest'
import { effectScope, nextTick, ref } from 'vue'
import { pagesFor, useVirtualRows, windowOf } from './virtualRows'

const settle = async () => {
  for (let i = 0; i < 5; i++) {
    await Promise.resolve()
    await nextTick()
  }
}

/** A server list of `total` numbered rows that records the pages asked of it. */
function server(total: number) {
  const asked: [number, number][] = []
  const held: (() => void)[] = []
  let hold = false
  return {
    asked,
    holdAnswers(on: boolean) {
      hold = on
    },
    release() {
      held.splice(0).forEach((f) => f())
    },
    fetchPage(offset: number, limit: number) {
      asked.push([offset, limit])
      const answer = {
        rows: Array.from({ length: Math.max(0, Math.min(limit, total - offset)) }, (_, i) => offset + i),
        total,
      }
      return hold ? new Promise<typeof answer>((r) => held.push(() => r(answer))) : Promise.resolve(answer)
    },
  }
}

describe('the rows a viewport needs', () => {
  it('clamps the window to the list and adds the overscan', () => {
    expect(windowOf(0, 360, 36, 5000, 5)).toEqual({ first: 0, last: 15 })
    expect(windowOf(36_000, 360, 36, 5000, 5)).toEqual({ first: 995, last: 1015 })
    expect(windowOf(179_640, 360, 36, 5000, 5)).toEqual({ first: 4985, last: 4999 })
    expect(windowOf(0, 360, 36, 0, 5)).toEqual({ first: 0, last: -1 })
  })

  it('names every page the window touches', () => {
    expect(pagesFor(0, 15, 100)).toEqual([0])
    expect(pagesFor(95, 215, 100)).toEqual([0, 1, 2])
    expect(pagesFor(0, -1, 100)).toEqual([])
  })
})

describe('useVirtualRows', () => {
  it('fetches the first page, then only the pages scrolled into view', async () => {
    const s = server(5000)
    const scope = effectScope()
    const list = scope.run(() => useVirtualRows({ fetchPage: s.fetchPage, filter: 'all', rowHeight: 36, overscan: 2 }))!
    await settle()
    expect(list.total.value).toBe(5000)
    expect(list.fullHeight.value).toBe(5000 * 36)
    expect(s.asked).toEqual([[0, 100]])
    expect(list.rows.value[0]).toEqual({ index: 0, row: 0 })

    const el = { scrollTop: 36 * 1050, clientHeight: 600 } as HTMLElement
    list.container.value = el
    await settle()
    list.onScroll()
    await settle()
    expect(s.asked).toEqual([
      [0, 100],
      [1000, 100],
    ])
    expect(list.rows.value.map((r) => r.row)).toContain(1050)
    expect(list.offsetY.value).toBe(36 * 1048)
    expect(list.near.value).toHaveLength(100)
    scope.stop()
  })

  it('starts over when the filter changes, and drops answers for the old filter', async () => {
    const s = server(300)
    const filter = ref('a')
    const scope = effectScope()
    const list = scope.run(() => useVirtualRows({ fetchPage: s.fetchPage, filter, rowHeight: 36 }))!
    await settle()
    expect(list.total.value).toBe(300)
    s.holdAnswers(true)
    list.refresh()
    filter.value = 'b'
    await settle()
    expect(list.known.value).toBe(false)
    expect(list.total.value).toBe(0)
    s.release()
    await settle()
    expect(list.known.value).toBe(true)
    expect(list.rows.value[0]?.row).toBe(0)
    scope.stop()
  })

  it('keeps only so many pages in memory', async () => {
    const s = server(10_000)
    const scope = effectScope()
    const list = scope.run(() => useVirtualRows({ fetchPage: s.fetchPage, filter: 'x', rowHeight: 10, maxPages: 2, overscan: 0 }))!
    await settle()
    const el = { scrollTop: 0, clientHeight: 100 } as HTMLElement
    list.container.value = el
    for (const top of [10_000, 20_000, 30_000]) {
      el.scrollTop = top
      list.onScroll()
      await settle()
    }
    expect(s.asked.map(([o]) => o)).toEqual([0, 1000, 2000, 3000])
    // Back to the start: page 0 was dropped and is fetched again.
    el.scrollTop = 0
    list.onScroll()
    await settle()
    expect(s.asked.map(([o]) => o)).toEqual([0, 1000, 2000, 3000, 0])
    scope.stop()
  })

  it('shows the error of a failed page and clears it on the next answer', async () => {
    let fail = true
    const scope = effectScope()
    const list = scope.run(() =>
      useVirtualRows({
        fetchPage: (offset, limit) => (fail ? Promise.reject(new Error('down')) : server(50).fetchPage(offset, limit)),
        filter: 'x',
        rowHeight: 36,
      }),
    )!
    await settle()
    expect((list.error.value as Error).message).toBe('down')
    fail = false
    list.refresh()
    await settle()
    expect(list.error.value).toBeNull()
    expect(list.rows.value[0]?.row).toBe(0)
    scope.stop()
  })
})
