import { ref } from 'vue'

/**
 * Paging backwards through a log by sequence number: the node answers a page and the
 * `before` of the next one; this keeps the way back.
 */
export function usePager() {
  const before = ref<number | undefined>(undefined)
  const trail: (number | undefined)[] = []
  const depth = ref(0)
  return {
    before,
    depth,
    older(next: number | null | undefined) {
      if (next == null) return
      trail.push(before.value)
      depth.value = trail.length
      before.value = next
    },
    newer() {
      before.value = trail.pop()
      depth.value = trail.length
    },
    reset() {
      trail.length = 0
      depth.value = 0
      before.value = undefined
    },
  }
}
