import { onScopeDispose, ref } from 'vue'
import { useQueryClient } from '@tanstack/vue-query'
import { ApiError } from '@smartpark/api'

const online = ref(true)

/** Marks the LAN link up or down (from the live stream, or any request). */
export function reportLink(up: boolean): void {
  online.value = up
}

/**
 * Whether this page can reach its edge node: down as soon as a request fails for want of
 * an answer, up again with the next answer. Live views resume on their own.
 */
export function useConnection() {
  const client = useQueryClient()
  const unsubscribe = client.getQueryCache().subscribe((event) => {
    const q = event.query
    if (event.type !== 'updated') return
    if (q.state.status === 'success' && q.state.fetchStatus === 'idle') online.value = true
    const e = q.state.error
    if (e instanceof ApiError && e.isNetwork) online.value = false
  })
  onScopeDispose(unsubscribe)
  return { online }
}
