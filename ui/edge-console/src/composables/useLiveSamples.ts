import { onScopeDispose, ref, watch, type MaybeRefOrGetter, toValue } from 'vue'
import { reportLink } from './useConnection'

export interface LiveSample {
  point: string
  ts: number
  value: number | boolean | string | null
  quality: string
  reason: string | null
}

/**
 * Live values of some points from the node's server-sent events: one EventSource per view,
 * closed when the view goes or the tab is hidden, reopened (and `onResume` called, to
 * refetch what was missed) when it comes back. The browser reconnects a dropped stream
 * itself; the LAN link shows down meanwhile.
 */
export function useLiveSamples(
  points: MaybeRefOrGetter<string[]>,
  onSamples: (samples: LiveSample[]) => void,
  onResume?: () => void,
) {
  const open = ref(false)
  let source: EventSource | null = null

  function close() {
    source?.close()
    source = null
    open.value = false
  }

  function connect() {
    close()
    const list = toValue(points)
    if (list.length === 0 || document.hidden) return
    const url = `/api/v1/stream?points=${encodeURIComponent(list.join(','))}`
    source = new EventSource(url, { withCredentials: true })
    source.addEventListener('open', () => {
      open.value = true
      reportLink(true)
    })
    source.addEventListener('samples', (e) => {
      const data = JSON.parse((e as MessageEvent<string>).data) as LiveSample[]
      onSamples(data)
    })
    source.addEventListener('error', () => {
      open.value = false
      if (source?.readyState === EventSource.CLOSED) reportLink(false)
      else reportLink(false)
    })
  }

  function visibility() {
    if (document.hidden) close()
    else {
      onResume?.()
      connect()
    }
  }

  document.addEventListener('visibilitychange', visibility)
  watch(() => toValue(points).join(','), connect, { immediate: true })
  onScopeDispose(() => {
    document.removeEventListener('visibilitychange', visibility)
    close()
  })
  return { open }
}
