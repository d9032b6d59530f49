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

export function useActiveAlarms(enabled: MaybeRefOrGetter<boolean> = true) {
  return useQuery({
    queryKey: [...keys.alarms, 'current'],
    queryFn: () => unwrap(api.GET('/api/v1/alarms')),
    enabled: computed(() => toValue(enabled)),
    refetchInterval: 5_000,
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

export interface AlarmFilter {
  state?: 'active_unacked' | 'active_acked' | 'cleared_unacked' | 'normal'
  severity?: 'P0' | 'P1' | 'P2'
  includeFolded?: boolean
}

/** The alarms as the node holds them, most urgent first, refreshed every few seconds. */
export function useAlarms(filter: MaybeRefOrGetter<AlarmFilter>) {
  return useQuery({
    queryKey: computed(() => [...keys.alarms, toValue(filter)]),
    queryFn: () => {
      const f = toValue(filter)
      return unwrap(
        api.GET('/api/v1/alarms', {
          params: {
            query: { state: f.state, severity: f.severity, include_folded: f.includeFolded || undefined },
          },
        }),
      )
    },
    refetchInterval: 3_000,
    placeholderData: keepPreviousData,
  })
}

export function useAlarm(id: MaybeRefOrGetter<string | null>) {
  return useQuery({
    queryKey: computed(() => ['alarm', toValue(id)]),
    queryFn: () => unwrap(api.GET('/api/v1/alarms/{id}', { params: { path: { id: toValue(id) ?? '' } } })),
    enabled: computed(() => toValue(id) !== null),
    refetchInterval: 5_000,
  })
}

/** Acknowledge, shelve, unshelve or comment: each refreshes the alarm and the list. */
export function useAlarmAction() {
  const client = useQueryClient()
  return useMutation({
    mutationFn: (a: { id: string } & (
      | { kind: 'acknowledge'; comment?: string }
      | { kind: 'shelve'; seconds: number; reason?: string }
      | { kind: 'unshelve' }
      | { kind: 'comment'; text: string }
    )) => {
      const path = { id: a.id }
      switch (a.kind) {
        case 'acknowledge':
          return unwrap(api.POST('/api/v1/alarms/{id}/acknowledge', { params: { path }, body: { comment: a.comment || null } }))
        case 'shelve':
          return unwrap(
            api.POST('/api/v1/alarms/{id}/shelve', { params: { path }, body: { duration_s: a.seconds, reason: a.reason || null } }),
          )
        case 'unshelve':
          return unwrap(api.POST('/api/v1/alarms/{id}/unshelve', { params: { path } }))
        case 'comment':
          return unwrap(api.POST('/api/v1/alarms/{id}/comment', { params: { path }, body: { text: a.text } }))
      }
    },
    onSuccess: (alarm, a) => {
      client.setQueryData(['alarm', a.id], alarm)
      void client.invalidateQueries({ queryKey: keys.alarms })
    },
  })
}

export function useDoors() {
  return useQuery({
    queryKey: ['doors'],
    queryFn: () => unwrap(api.GET('/api/v1/doors')),
    refetchInterval: 3_000,
  })
}

export interface EventFilter {
  kind: string
  subject?: string
  before?: number
  limit: number
}

/** A page of the event log, newest first (`before` pages back by sequence number). */
export function useEvents(filter: MaybeRefOrGetter<EventFilter>) {
  return useQuery({
    queryKey: computed(() => ['events', toValue(filter)]),
    queryFn: () => {
      const f = toValue(filter)
      return unwrap(
        api.GET('/api/v1/events', {
          params: { query: { kind: f.kind || undefined, subject: f.subject || undefined, before: f.before, limit: f.limit } },
        }),
      )
    },
    refetchInterval: computed(() => (toValue(filter).before === undefined ? 5_000 : false)),
    placeholderData: keepPreviousData,
  })
}

export function useOpenDoor() {
  const client = useQueryClient()
  return useMutation({
    mutationFn: (o: { id: string; reason: string }) =>
      unwrap(api.POST('/api/v1/doors/{id}/open', { params: { path: { id: o.id } }, body: { reason: o.reason } })),
    onSuccess: () => {
      void client.invalidateQueries({ queryKey: ['doors'] })
      void client.invalidateQueries({ queryKey: ['events'] })
    },
  })
}

export function useLots() {
  return useQuery({ queryKey: ['lots'], queryFn: () => unwrap(api.GET('/api/v1/lots')), refetchInterval: 3_000 })
}

export function useParkingSessions() {
  return useQuery({
    queryKey: ['parking-sessions'],
    queryFn: () => unwrap(api.GET('/api/v1/parking/sessions')),
    refetchInterval: 5_000,
  })
}

export function useReviewQueue(enabled: MaybeRefOrGetter<boolean>) {
  return useQuery({
    queryKey: ['review'],
    queryFn: () => unwrap(api.GET('/api/v1/parking/review')),
    enabled: computed(() => toValue(enabled)),
    refetchInterval: 3_000,
  })
}

export function useResolveReview() {
  const client = useQueryClient()
  return useMutation({
    mutationFn: (r: { id: string; admit: boolean; plate?: string }) =>
      unwrap(
        api.POST('/api/v1/parking/review/{id}', {
          params: { path: { id: r.id } },
          body: { admit: r.admit, plate: r.plate || null },
        }),
      ),
    onSuccess: () => {
      for (const key of [['review'], ['lots'], ['parking-sessions'], ['events']]) void client.invalidateQueries({ queryKey: key })
    },
  })
}

export function useRules() {
  return useQuery({ queryKey: ['rules'], queryFn: () => unwrap(api.GET('/api/v1/rules')), refetchInterval: 10_000 })
}

export function useReloadRules() {
  const client = useQueryClient()
  return useMutation({
    mutationFn: () => unwrap(api.POST('/api/v1/rules/reload')),
    onSettled: () => void client.invalidateQueries({ queryKey: ['rules'] }),
  })
}

export function useAudit(before: MaybeRefOrGetter<number | undefined>, limit = 50) {
  return useQuery({
    queryKey: computed(() => ['audit', toValue(before), limit]),
    queryFn: () => unwrap(api.GET('/api/v1/audit', { params: { query: { before: toValue(before), limit } } })),
    placeholderData: keepPreviousData,
  })
}

export function useUsers() {
  return useQuery({ queryKey: ['users'], queryFn: () => unwrap(api.GET('/api/v1/users')), refetchInterval: 15_000 })
}

export interface PeopleQuery {
  q: string
  offset: number
  limit: number
}

/** One page of the park's people with their credentials (masked), filtered on the node. */
export function usePeople(query: MaybeRefOrGetter<PeopleQuery>) {
  return useQuery({
    queryKey: computed(() => ['people', toValue(query)] as const),
    queryFn: () => {
      const q = toValue(query)
      return unwrap(api.GET('/api/v1/people', { params: { query: { q: q.q || undefined, offset: q.offset, limit: q.limit } } }))
    },
    placeholderData: keepPreviousData,
  })
}

/** Suspends, restores or reports lost a credential (audited on the node). */
export function useCredentialStatus() {
  const client = useQueryClient()
  return useMutation({
    mutationFn: (c: { id: string; status: 'active' | 'suspended' | 'lost'; reason: string }) =>
      unwrap(
        api.POST('/api/v1/credentials/{id}/status', {
          params: { path: { id: c.id } },
          body: { status: c.status, reason: c.reason || null },
        }),
      ),
    onSuccess: () => void client.invalidateQueries({ queryKey: ['people'] }),
  })
}
