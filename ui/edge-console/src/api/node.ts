// Server data of the node, through TanStack Query: views read these, never a store.
import { computed, type MaybeRefOrGetter, toValue } from 'vue'
import { keepPreviousData, useMutation, useQuery, useQueryClient } from '@tanstack/vue-query'
import { unwrap } from '@smartpark/api'
import { api } from './client'

export const keys = {
  site: ['site'] as const,
  sync: ['sync'] as const,
  store: ['store'] as const,
  devices: ['devices'] as const,
  alarms: ['alarms'] as const,
  points: (q: object) => ['points', q] as const,
  point: (device: string, point: string) => ['point', device, point] as const,
  history: (device: string, point: string, q: object) => ['history', device, point, q] as const,
}

export function useSite(enabled: MaybeRefOrGetter<boolean> = true) {
  return useQuery({
    queryKey: keys.site,
    queryFn: () => unwrap(api.GET('/api/v1/site')),
    enabled: computed(() => toValue(enabled)),
    staleTime: 60_000,
  })
}

export function useSyncState(enabled: MaybeRefOrGetter<boolean> = true) {
  return useQuery({
    queryKey: keys.sync,
    queryFn: () => unwrap(api.GET('/api/v1/sync')),
    enabled: computed(() => toValue(enabled)),
    refetchInterval: 5_000,
  })
}

export function useStoreState() {
  return useQuery({
    queryKey: keys.store,
    queryFn: () => unwrap(api.GET('/api/v1/store')),
    refetchInterval: 15_000,
  })
}

export function useDevices() {
  return useQuery({
    queryKey: keys.devices,
    queryFn: () => unwrap(api.GET('/api/v1/devices')),
    refetchInterval: 10_000,
  })
}

export function useActiveAlarms() {
  return useQuery({
    queryKey: keys.alarms,
    queryFn: () => unwrap(api.GET('/api/v1/alarms')),
    refetchInterval: 5_000,
  })
}

export interface PointQuery {
  q?: string
  device?: string
  offset: number
  limit: number
}

/** One page of points, filtered on the node. */
export function usePointPage(query: MaybeRefOrGetter<PointQuery>) {
  return useQuery({
    queryKey: computed(() => keys.points(toValue(query))),
    queryFn: () => {
      const q = toValue(query)
      return unwrap(
        api.GET('/api/v1/points', {
          params: {
            query: {
              q: q.q || undefined,
              device: q.device || undefined,
              offset: q.offset,
              limit: q.limit,
            },
          },
        }),
      )
    },
    placeholderData: keepPreviousData,
  })
}

export function usePoint(device: MaybeRefOrGetter<string>, point: MaybeRefOrGetter<string>) {
  return useQuery({
    queryKey: computed(() => keys.point(toValue(device), toValue(point))),
    queryFn: () =>
      unwrap(
        api.GET('/api/v1/points/{device}/{point}', {
          params: { path: { device: toValue(device), point: toValue(point) } },
        }),
      ),
  })
}

export interface HistoryQuery {
  from: number
  to: number
}

/** History of a point: raw samples up to 2 hours, rollups beyond (the node picks). */
export function useHistory(
  device: MaybeRefOrGetter<string>,
  point: MaybeRefOrGetter<string>,
  range: MaybeRefOrGetter<HistoryQuery>,
) {
  return useQuery({
    queryKey: computed(() => keys.history(toValue(device), toValue(point), toValue(range))),
    queryFn: () => {
      const r = toValue(range)
      return unwrap(
        api.GET('/api/v1/points/{device}/{point}/history', {
          params: {
            path: { device: toValue(device), point: toValue(point) },
            query: { from: Math.round(r.from), to: Math.round(r.to), resolution: 'auto', limit: 5000 },
          },
        }),
      )
    },
    placeholderData: keepPreviousData,
  })
}

export function useWritePoint() {
  const client = useQueryClient()
  return useMutation({
    mutationFn: (w: { device: string; point: string; value: number | boolean; reason?: string }) =>
      unwrap(
        api.POST('/api/v1/points/{device}/{point}/write', {
          params: { path: { device: w.device, point: w.point } },
          body: { value: w.value, reason: w.reason || null },
        }),
      ),
    onSuccess: (_, w) => {
      void client.invalidateQueries({ queryKey: keys.point(w.device, w.point) })
      void client.invalidateQueries({ queryKey: ['points'] })
      void client.invalidateQueries({ queryKey: ['history', w.device, w.point] })
    },
  })
}
