// Server data of the hub, through TanStack Query: views read these, never a store.
import { computed, type MaybeRefOrGetter, toValue } from 'vue'
import { keepPreviousData, useMutation, useQuery, useQueryClient } from '@tanstack/vue-query'
import { unwrap } from '@smartpark/api'
import { api } from './client'
import type { HubComponents } from '@smartpark/api'

type Body<N extends keyof HubComponents['schemas']> = HubComponents['schemas'][N]

/** A page of a master-data list: search text, offset and size. */
export interface ListArgs {
  q?: string
  of?: string
  offset: number
  limit: number
}

const on = (enabled: MaybeRefOrGetter<boolean>) => computed(() => toValue(enabled))

export function useParks(enabled: MaybeRefOrGetter<boolean> = true) {
  return useQuery({
    queryKey: ['parks'],
    queryFn: () => unwrap(api.GET('/api/v1/parks')),
    enabled: on(enabled),
    refetchInterval: 15_000,
  })
}

export function useBuildings(park: MaybeRefOrGetter<string>, enabled: MaybeRefOrGetter<boolean> = true) {
  return useQuery({
    queryKey: computed(() => ['buildings', toValue(park)]),
    queryFn: () => unwrap(api.GET('/api/v1/parks/{park}/buildings', { params: { path: { park: toValue(park) } } })),
    enabled: computed(() => toValue(enabled) && toValue(park) !== ''),
    refetchInterval: 5_000,
  })
}

export function useBuilding(park: MaybeRefOrGetter<string>, building: MaybeRefOrGetter<string>) {
  return useQuery({
    queryKey: computed(() => ['building', toValue(park), toValue(building)]),
    queryFn: () =>
      unwrap(
        api.GET('/api/v1/parks/{park}/buildings/{building}', {
          params: { path: { park: toValue(park), building: toValue(building) } },
        }),
      ),
    refetchInterval: 5_000,
  })
}

export function useLatest(park: MaybeRefOrGetter<string>, building: MaybeRefOrGetter<string>) {
  return useQuery({
    queryKey: computed(() => ['latest', toValue(park), toValue(building)]),
    queryFn: () =>
      unwrap(
        api.GET('/api/v1/parks/{park}/buildings/{building}/points', {
          params: { path: { park: toValue(park), building: toValue(building) } },
        }),
      ),
    refetchInterval: 5_000,
  })
}

export function useHistory(
  park: MaybeRefOrGetter<string>,
  building: MaybeRefOrGetter<string>,
  point: MaybeRefOrGetter<string>,
  range: MaybeRefOrGetter<{ from: number; to: number }>,
) {
  return useQuery({
    queryKey: computed(() => ['history', toValue(park), toValue(building), toValue(point), toValue(range)]),
    queryFn: () => {
      const [device, name] = toValue(point).split('/')
      return unwrap(
        api.GET('/api/v1/parks/{park}/buildings/{building}/points/{device}/{point}/history', {
          params: {
            path: { park: toValue(park), building: toValue(building), device: device ?? '', point: name ?? '' },
            query: { ...toValue(range), resolution: 'auto' },
          },
        }),
      )
    },
    enabled: computed(() => toValue(point).includes('/')),
    placeholderData: keepPreviousData,
  })
}

/** The building's newest uploaded events, a page at a time backwards. */
export function useEvents(park: MaybeRefOrGetter<string>, building: MaybeRefOrGetter<string>, before: MaybeRefOrGetter<number | undefined>) {
  return useQuery({
    queryKey: computed(() => ['events', toValue(park), toValue(building), toValue(before)]),
    queryFn: () =>
      unwrap(
        api.GET('/api/v1/parks/{park}/buildings/{building}/events', {
          params: {
            path: { park: toValue(park), building: toValue(building) },
            query: { before: toValue(before) ?? Number.MAX_SAFE_INTEGER, limit: 50 },
          },
        }),
      ),
    refetchInterval: 5_000,
    placeholderData: keepPreviousData,
  })
}

// ---- master data ----

const listKey = (kind: string, park: MaybeRefOrGetter<string>, args: MaybeRefOrGetter<ListArgs>) =>
  computed(() => ['master', toValue(park), kind, toValue(args)])

export function useEnterprises(park: MaybeRefOrGetter<string>, args: MaybeRefOrGetter<ListArgs>) {
  return useQuery({
    queryKey: listKey('enterprises', park, args),
    queryFn: () => unwrap(api.GET('/api/v1/parks/{park}/enterprises', { params: { path: { park: toValue(park) }, query: toValue(args) } })),
    enabled: computed(() => toValue(park) !== ''),
    placeholderData: keepPreviousData,
  })
}

export function usePeople(park: MaybeRefOrGetter<string>, args: MaybeRefOrGetter<ListArgs>) {
  return useQuery({
    queryKey: listKey('people', park, args),
    queryFn: () => unwrap(api.GET('/api/v1/parks/{park}/people', { params: { path: { park: toValue(park) }, query: toValue(args) } })),
    enabled: computed(() => toValue(park) !== ''),
    placeholderData: keepPreviousData,
  })
}

export function useCredentials(park: MaybeRefOrGetter<string>, args: MaybeRefOrGetter<ListArgs>) {
  return useQuery({
    queryKey: listKey('credentials', park, args),
    queryFn: () => unwrap(api.GET('/api/v1/parks/{park}/credentials', { params: { path: { park: toValue(park) }, query: toValue(args) } })),
    enabled: computed(() => toValue(park) !== ''),
    placeholderData: keepPreviousData,
  })
}

export function useAccessGroups(park: MaybeRefOrGetter<string>, args: MaybeRefOrGetter<ListArgs>) {
  return useQuery({
    queryKey: listKey('access-groups', park, args),
    queryFn: () => unwrap(api.GET('/api/v1/parks/{park}/access-groups', { params: { path: { park: toValue(park) }, query: toValue(args) } })),
    enabled: computed(() => toValue(park) !== ''),
    placeholderData: keepPreviousData,
  })
}

/** Every write of master data refreshes the park's lists. */
function useMasterWrite<A, R>(park: MaybeRefOrGetter<string>, write: (park: string, args: A) => Promise<R>) {
  const client = useQueryClient()
  return useMutation({
    mutationFn: (args: A) => write(toValue(park), args),
    onSuccess: () => client.invalidateQueries({ queryKey: ['master', toValue(park)] }),
  })
}

export function usePutEnterprise(park: MaybeRefOrGetter<string>) {
  return useMasterWrite(park, (p, a: { id: string; name: string; status: string; kind: string }) =>
    unwrap(
      api.PUT('/api/v1/parks/{park}/enterprises/{enterprise}', {
        params: { path: { park: p, enterprise: a.id } },
        body: { name: a.name, status: a.status as Body<'EnterpriseBody'>['status'], kind: a.kind as Body<'EnterpriseBody'>['kind'] },
      }),
    ),
  )
}

export function usePutPerson(park: MaybeRefOrGetter<string>) {
  return useMasterWrite(
    park,
    (p, a: { id: string; name: string; enterprise_id: string; status: string; access_group_ids: string[] }) =>
      unwrap(
        api.PUT('/api/v1/parks/{park}/people/{person}', {
          params: { path: { park: p, person: a.id } },
          body: {
            name: a.name,
            enterprise_id: a.enterprise_id,
            status: a.status as Body<'PersonBody'>['status'],
            access_group_ids: a.access_group_ids,
          },
        }),
      ),
  )
}

export function usePutGroup(park: MaybeRefOrGetter<string>) {
  return useMasterWrite(park, (p, a: { id: string; name: string; door_ids: string[]; schedule_id: string | null }) =>
    unwrap(
      api.PUT('/api/v1/parks/{park}/access-groups/{group}', {
        params: { path: { park: p, group: a.id } },
        body: { name: a.name, door_ids: a.door_ids, schedule_id: a.schedule_id },
      }),
    ),
  )
}

export function useIssueCredential(park: MaybeRefOrGetter<string>) {
  return useMasterWrite(park, (p, a: { id: string; person_id: string; kind: string; value: string }) =>
    unwrap(
      api.PUT('/api/v1/parks/{park}/credentials/{credential}', {
        params: { path: { park: p, credential: a.id } },
        body: { person_id: a.person_id, kind: a.kind as Body<'CredentialBody'>['kind'], value: a.value },
      }),
    ),
  )
}

export function useCredentialStatus(park: MaybeRefOrGetter<string>) {
  return useMasterWrite(park, (p, a: { id: string; status: string; reason: string }) =>
    unwrap(
      api.POST('/api/v1/parks/{park}/credentials/{credential}/status', {
        params: { path: { park: p, credential: a.id } },
        body: { status: a.status as Body<'CredentialStatusBody'>['status'], reason: a.reason },
      }),
    ),
  )
}

// ---- spaces, schedules and calendars ----

export function useSpaces(park: MaybeRefOrGetter<string>, args: MaybeRefOrGetter<ListArgs>) {
  return useQuery({
    queryKey: listKey('spaces', park, args),
    queryFn: () => unwrap(api.GET('/api/v1/parks/{park}/spaces', { params: { path: { park: toValue(park) }, query: toValue(args) } })),
    enabled: computed(() => toValue(park) !== ''),
    placeholderData: keepPreviousData,
  })
}

export function useSchedules(park: MaybeRefOrGetter<string>, args: MaybeRefOrGetter<ListArgs>) {
  return useQuery({
    queryKey: listKey('schedules', park, args),
    queryFn: () => unwrap(api.GET('/api/v1/parks/{park}/schedules', { params: { path: { park: toValue(park) }, query: toValue(args) } })),
    enabled: computed(() => toValue(park) !== ''),
    placeholderData: keepPreviousData,
  })
}

export function useCalendars(park: MaybeRefOrGetter<string>, args: MaybeRefOrGetter<ListArgs>) {
  return useQuery({
    queryKey: listKey('calendars', park, args),
    queryFn: () =>
      unwrap(api.GET('/api/v1/parks/{park}/holiday-calendars', { params: { path: { park: toValue(park) }, query: toValue(args) } })),
    enabled: computed(() => toValue(park) !== ''),
    placeholderData: keepPreviousData,
  })
}

export interface SpaceFields {
  id: string
  building_id: string
  floor: number
  area_m2: number
  name: string
  kind: string
  state: string
}

export function usePutSpace(park: MaybeRefOrGetter<string>) {
  return useMasterWrite(park, (p, { id, kind, state, ...rest }: SpaceFields) =>
    unwrap(
      api.PUT('/api/v1/parks/{park}/spaces/{space}', {
        params: { path: { park: p, space: id } },
        body: { ...rest, kind: kind as Body<'SpaceBody'>['kind'], state: state as Body<'SpaceBody'>['state'] },
      }),
    ),
  )
}

export type ScheduleFields = Body<'ScheduleBody'> & { id: string }

export function usePutSchedule(park: MaybeRefOrGetter<string>) {
  return useMasterWrite(park, (p, { id, ...body }: ScheduleFields) =>
    unwrap(api.PUT('/api/v1/parks/{park}/schedules/{schedule}', { params: { path: { park: p, schedule: id } }, body })),
  )
}

export function usePutCalendar(park: MaybeRefOrGetter<string>) {
  return useMasterWrite(park, (p, { id, ...body }: { id: string; name: string; dates: string[] }) =>
    unwrap(api.PUT('/api/v1/parks/{park}/holiday-calendars/{calendar}', { params: { path: { park: p, calendar: id } }, body })),
  )
}

// ---- car parks ----

export function useTariffs(park: MaybeRefOrGetter<string>, args: MaybeRefOrGetter<ListArgs>) {
  return useQuery({
    queryKey: listKey('tariffs', park, args),
    queryFn: () => unwrap(api.GET('/api/v1/parks/{park}/tariffs', { params: { path: { park: toValue(park) }, query: toValue(args) } })),
    enabled: computed(() => toValue(park) !== ''),
    placeholderData: keepPreviousData,
  })
}

export function useLots(park: MaybeRefOrGetter<string>, args: MaybeRefOrGetter<ListArgs>) {
  return useQuery({
    queryKey: listKey('lots', park, args),
    queryFn: () => unwrap(api.GET('/api/v1/parks/{park}/lots', { params: { path: { park: toValue(park) }, query: toValue(args) } })),
    enabled: computed(() => toValue(park) !== ''),
    placeholderData: keepPreviousData,
  })
}

export function useLanes(park: MaybeRefOrGetter<string>, args: MaybeRefOrGetter<ListArgs>) {
  return useQuery({
    queryKey: listKey('lanes', park, args),
    queryFn: () => unwrap(api.GET('/api/v1/parks/{park}/lanes', { params: { path: { park: toValue(park) }, query: toValue(args) } })),
    enabled: computed(() => toValue(park) !== ''),
    placeholderData: keepPreviousData,
  })
}

export function usePasses(park: MaybeRefOrGetter<string>, args: MaybeRefOrGetter<ListArgs>) {
  return useQuery({
    queryKey: listKey('passes', park, args),
    queryFn: () => unwrap(api.GET('/api/v1/parks/{park}/passes', { params: { path: { park: toValue(park) }, query: toValue(args) } })),
    enabled: computed(() => toValue(park) !== ''),
    placeholderData: keepPreviousData,
  })
}

export type TariffFields = Omit<Body<'TariffBody'>, 'daily_cap_fen'> & { id: string; daily_cap_fen: number | null }

export function usePutTariff(park: MaybeRefOrGetter<string>) {
  return useMasterWrite(park, (p, { id, ...body }: TariffFields) =>
    unwrap(api.PUT('/api/v1/parks/{park}/tariffs/{tariff}', { params: { path: { park: p, tariff: id } }, body })),
  )
}

export function usePutLot(park: MaybeRefOrGetter<string>) {
  return useMasterWrite(park, (p, { id, ...body }: { id: string; name: string; capacity: number; tariff_id: string | null }) =>
    unwrap(api.PUT('/api/v1/parks/{park}/lots/{lot}', { params: { path: { park: p, lot: id } }, body })),
  )
}

export function usePutLane(park: MaybeRefOrGetter<string>) {
  return useMasterWrite(park, (p, { id, direction, ...rest }: { id: string; lot_id: string; direction: string; name: string }) =>
    unwrap(
      api.PUT('/api/v1/parks/{park}/lanes/{lane}', {
        params: { path: { park: p, lane: id } },
        body: { ...rest, direction: direction as Body<'LaneBody'>['direction'] },
      }),
    ),
  )
}

export interface PassFields {
  id: string
  plate: string
  kind: string
  lot_ids: string[]
  valid_from: number
  valid_to: number
  status: string
  enterprise_id: string | null
}

export function usePutPass(park: MaybeRefOrGetter<string>) {
  return useMasterWrite(park, (p, { id, kind, status, ...rest }: PassFields) =>
    unwrap(
      api.PUT('/api/v1/parks/{park}/passes/{pass}', {
        params: { path: { park: p, pass: id } },
        body: { ...rest, kind: kind as Body<'PassBody'>['kind'], status: status as Body<'PassBody'>['status'] },
      }),
    ),
  )
}

export type ImportKind = 'enterprises' | 'people' | 'credentials'

export function useImport(park: MaybeRefOrGetter<string>) {
  return useMasterWrite(park, (p, { kind, ...body }: { kind: ImportKind; csv?: string; xlsx?: string; dry_run: boolean }) =>
    unwrap(api.POST('/api/v1/parks/{park}/import/{kind}', { params: { path: { park: p, kind } }, body })),
  )
}

// ---- one enterprise ----

export function useEnterprise(park: MaybeRefOrGetter<string>, enterprise: MaybeRefOrGetter<string>) {
  return useQuery({
    queryKey: computed(() => ['enterprise', toValue(park), toValue(enterprise)]),
    queryFn: () =>
      unwrap(
        api.GET('/api/v1/parks/{park}/enterprises/{enterprise}', {
          params: { path: { park: toValue(park), enterprise: toValue(enterprise) } },
        }),
      ),
    enabled: computed(() => toValue(enterprise) !== ''),
  })
}

export function useEnterprisePeople(park: MaybeRefOrGetter<string>, enterprise: MaybeRefOrGetter<string>, args: MaybeRefOrGetter<ListArgs>) {
  return useQuery({
    queryKey: computed(() => ['enterprise', toValue(park), toValue(enterprise), 'people', toValue(args)]),
    queryFn: () =>
      unwrap(
        api.GET('/api/v1/parks/{park}/enterprises/{enterprise}/people', {
          params: { path: { park: toValue(park), enterprise: toValue(enterprise) }, query: toValue(args) },
        }),
      ),
    enabled: computed(() => toValue(enterprise) !== ''),
    placeholderData: keepPreviousData,
  })
}

export function useEnterpriseCredentials(park: MaybeRefOrGetter<string>, enterprise: MaybeRefOrGetter<string>, args: MaybeRefOrGetter<ListArgs>) {
  return useQuery({
    queryKey: computed(() => ['enterprise', toValue(park), toValue(enterprise), 'credentials', toValue(args)]),
    queryFn: () =>
      unwrap(
        api.GET('/api/v1/parks/{park}/enterprises/{enterprise}/credentials', {
          params: { path: { park: toValue(park), enterprise: toValue(enterprise) }, query: toValue(args) },
        }),
      ),
    enabled: computed(() => toValue(enterprise) !== ''),
    placeholderData: keepPreviousData,
  })
}

export function useEnterprisePasses(park: MaybeRefOrGetter<string>, enterprise: MaybeRefOrGetter<string>, args: MaybeRefOrGetter<ListArgs>) {
  return useQuery({
    queryKey: computed(() => ['enterprise', toValue(park), toValue(enterprise), 'passes', toValue(args)]),
    queryFn: () =>
      unwrap(
        api.GET('/api/v1/parks/{park}/enterprises/{enterprise}/passes', {
          params: { path: { park: toValue(park), enterprise: toValue(enterprise) }, query: toValue(args) },
        }),
      ),
    enabled: computed(() => toValue(enterprise) !== ''),
    placeholderData: keepPreviousData,
  })
}

// ---- users and audit ----

export function useUsers() {
  return useQuery({ queryKey: ['users'], queryFn: () => unwrap(api.GET('/api/v1/users')) })
}

export function useCreateUser() {
  const client = useQueryClient()
  return useMutation({
    mutationFn: (body: { username: string; displayName: string; password: string; grants: string[] }) =>
      unwrap(api.POST('/api/v1/users', { body })),
    onSuccess: () => client.invalidateQueries({ queryKey: ['users'] }),
  })
}

export function useUserSwitch() {
  const client = useQueryClient()
  return useMutation({
    mutationFn: ({ id, enable }: { id: string; enable: boolean }) =>
      unwrap(
        enable
          ? api.POST('/api/v1/users/{id}/enable', { params: { path: { id } } })
          : api.POST('/api/v1/users/{id}/disable', { params: { path: { id } } }),
      ),
    onSuccess: () => client.invalidateQueries({ queryKey: ['users'] }),
  })
}

/** The hub's audit records of `park`, or its whole log when `park` is empty (the operator's). */
export function useAudit(park: MaybeRefOrGetter<string>, before: MaybeRefOrGetter<number | undefined>) {
  return useQuery({
    queryKey: computed(() => ['audit', toValue(park), toValue(before)]),
    queryFn: () => {
      const query = { limit: 50, before: toValue(before) }
      const p = toValue(park)
      return unwrap(
        p === ''
          ? api.GET('/api/v1/audit', { params: { query } })
          : api.GET('/api/v1/parks/{park}/audit', { params: { path: { park: p }, query } }),
      )
    },
    placeholderData: keepPreviousData,
  })
}
