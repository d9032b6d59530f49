import { computed, onScopeDispose, ref, shallowReactive, shallowRef, watch, type MaybeRefOrGetter, type Ref, toValue } from 'vue'

/** `source`, once it has stayed the same for `ms`. */
export function debounced<T>(source: MaybeRefOrGetter<T>, ms: number): Ref<T> {
  const out = ref(toValue(source)) as Ref<T>
  let timer: ReturnType<typeof setTimeout> | undefined
  watch(
    () => toValue(source),
    (v) => {
      clearTimeout(timer)
      timer = setTimeout(() => (out.value = v), ms)
    },
  )
  onScopeDispose(() => clearTimeout(timer))
  return out
}

/** One page of a long list, as the server answers it. */
export interface RowPage<T> {
  rows: T[]
  total: number
}

/** How long a failed page waits before it is asked for again. */
const RETRY_MS = 3000

export interface VirtualRowsOptions<T> {
  /** Fetches `limit` rows from `offset` of the list the `filter` names. */
  fetchPage: (offset: number, limit: number) => Promise<RowPage<T>>
  /** What selects the list (search text, device…): when it changes, the rows start over. */
  filter: MaybeRefOrGetter<string>
  /** Every row's height in pixels. */
  rowHeight: number
  /** Rows per request. */
  pageSize?: number
  /** Rows rendered above and below the viewport. */
  overscan?: number
  /** Pages kept in memory; the farthest from the viewport go first. */
  maxPages?: number
}

export interface VirtualRow<T> {
  index: number
  row: T | undefined
}

/** The pages a window of rows needs, first to last. */
export function pagesFor(first: number, last: number, pageSize: number): number[] {
  if (last < first) return []
  const out: number[] = []
  for (let p = Math.floor(first / pageSize); p <= Math.floor(last / pageSize); p++) out.push(p)
  return out
}

/** The rows a viewport shows, with `overscan` more on each side, clamped to the list. */
export function windowOf(scrollTop: number, height: number, rowHeight: number, total: number, overscan: number) {
  const first = Math.max(0, Math.floor(scrollTop / rowHeight) - overscan)
  const last = Math.min(total - 1, Math.ceil((scrollTop + height) / rowHeight) + overscan)
  return { first, last }
}

/**
 * A long server-side list rendered a window at a time: the container scrolls over the whole
 * list's height, only the rows near the viewport are in the DOM, and their pages are
 * fetched from the server as they come into view (and dropped when far away). Nothing loads
 * the whole list.
 */
export function useVirtualRows<T>(options: VirtualRowsOptions<T>) {
  const pageSize = options.pageSize ?? 100
  const overscan = options.overscan ?? 8
  const maxPages = options.maxPages ?? 12
  const container = ref<HTMLElement | null>(null)
  const scrollTop = ref(0)
  const height = ref(600)
  const total = ref(0)
  const known = ref(false)
  const error = shallowRef<unknown>(null)
  const pages = shallowReactive(new Map<number, T[]>())
  const pending = new Set<number>()
  let generation = 0
  let retry: ReturnType<typeof setTimeout> | undefined

  const range = computed(() => windowOf(scrollTop.value, height.value, options.rowHeight, total.value, overscan))

  async function load(page: number) {
    if (pending.has(page)) return
    pending.add(page)
    const asked = generation
    try {
      const answer = await options.fetchPage(page * pageSize, pageSize)
      if (asked !== generation) return
      total.value = answer.total
      known.value = true
      pages.set(page, answer.rows)
      error.value = null
      evict()
    } catch (e) {
      if (asked === generation) {
        error.value = e
        clearTimeout(retry)
        retry = setTimeout(fill, RETRY_MS)
      }
    } finally {
      pending.delete(page)
    }
  }

  function evict() {
    if (pages.size <= maxPages) return
    const centre = Math.floor(range.value.first / pageSize)
    const far = [...pages.keys()].sort((a, b) => Math.abs(b - centre) - Math.abs(a - centre))
    for (const p of far.slice(0, pages.size - maxPages)) pages.delete(p)
  }

  function fill() {
    const { first, last } = range.value
    const wanted = known.value ? pagesFor(first, last, pageSize) : [0]
    for (const p of wanted) if (!pages.has(p)) void load(p)
  }

  /** Fetches again the pages in memory (after the live stream was away), and any missing. */
  function refresh() {
    for (const p of [...pages.keys()]) void load(p)
    fill()
  }

  function reset() {
    generation++
    pending.clear()
    pages.clear()
    known.value = false
    total.value = 0
    scrollTop.value = 0
    if (container.value) container.value.scrollTop = 0
    fill()
  }

  function onScroll() {
    if (container.value) scrollTop.value = container.value.scrollTop
  }

  let observer: ResizeObserver | null = null
  watch(container, (el) => {
    observer?.disconnect()
    if (!el) return
    height.value = el.clientHeight || height.value
    if (typeof ResizeObserver !== 'undefined') {
      observer = new ResizeObserver(() => {
        height.value = el.clientHeight || height.value
      })
      observer.observe(el)
    }
  })
  onScopeDispose(() => {
    observer?.disconnect()
    clearTimeout(retry)
  })

  watch(() => toValue(options.filter), reset, { immediate: true })
  watch(range, fill)

  const rows = computed<VirtualRow<T>[]>(() => {
    const { first, last } = range.value
    const out: VirtualRow<T>[] = []
    for (let i = first; i <= last; i++) {
      out.push({ index: i, row: pages.get(Math.floor(i / pageSize))?.[i % pageSize] })
    }
    return out
  })

  /** The rows of the pages in memory around the viewport: what a live view follows. */
  const near = computed<T[]>(() => {
    const { first, last } = range.value
    const out: T[] = []
    for (const p of pagesFor(first, last, pageSize)) out.push(...(pages.get(p) ?? []))
    return out
  })

  return {
    container,
    total,
    known,
    error,
    rows,
    near,
    /** The space above the first rendered row. */
    offsetY: computed(() => range.value.first * options.rowHeight),
    /** The whole list's height. */
    fullHeight: computed(() => total.value * options.rowHeight),
    onScroll,
    refresh,
  }
}
