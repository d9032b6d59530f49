// Leads (招商线索) on the hub, through TanStack Query: the park's list (due follow-ups first),
// a lead with its follow-ups, its form, follow-ups and the acts of its states. Converting a
// lead adds an enterprise to the park's directory, so it refreshes the master lists too.
import { computed, type MaybeRefOrGetter, toValue } from 'vue'
import { keepPreviousData, useMutation, useQuery, useQueryClient } from '@tanstack/vue-query'
import { unwrap, type HubComponents } from '@smartpark/api'
import { api } from './client'

type Schemas = HubComponents['schemas']
export type LeadView = Schemas['LeadView']
export type LeadBody = Schemas['LeadBody']
export type LeadState = LeadView['state']
export type LeadSource = LeadBody['source']
export type LeadActionName = Schemas['LeadAction']['action']
export type FollowUpBody = Schemas['FollowUpBody']
export type FollowUpKind = FollowUpBody['kind']

export const LEAD_STATES: readonly LeadState[] = ['new', 'following', 'intent', 'converted', 'lost']
export const LEAD_SOURCES: readonly LeadSource[] = ['visit', 'call', 'referral', 'online', 'event', 'other']
export const FOLLOW_UP_KINDS: readonly FollowUpKind[] = ['call', 'visit', 'meeting', 'message', 'other']

export interface LeadFilter {
  state: LeadState | ''
  q: string
  offset: number
  limit: number
}

export function useLeads(park: MaybeRefOrGetter<string>, filter: MaybeRefOrGetter<LeadFilter>) {
  return useQuery({
    queryKey: computed(() => ['leads', toValue(park), 'list', toValue(filter)]),
    queryFn: () => {
      const f = toValue(filter)
      return unwrap(
        api.GET('/api/v1/parks/{park}/leads', {
          params: {
            path: { park: toValue(park) },
            query: { state: f.state === '' ? undefined : f.state, q: f.q.trim() === '' ? undefined : f.q.trim(), offset: f.offset, limit: f.limit },
          },
        }),
      )
    },
    enabled: computed(() => toValue(park) !== ''),
    placeholderData: keepPreviousData,
  })
}

export function useLead(park: MaybeRefOrGetter<string>, id: MaybeRefOrGetter<string>) {
  return useQuery({
    queryKey: computed(() => ['leads', toValue(park), 'lead', toValue(id)]),
    queryFn: () => unwrap(api.GET('/api/v1/parks/{park}/leads/{lead}', { params: { path: { park: toValue(park), lead: toValue(id) } } })),
    enabled: computed(() => toValue(park) !== '' && toValue(id) !== ''),
  })
}

function useLeadWrite<A, R>(park: MaybeRefOrGetter<string>, write: (park: string, args: A) => Promise<R>) {
  const client = useQueryClient()
  return useMutation({
    mutationFn: (args: A) => write(toValue(park), args),
    onSettled: () => {
      void client.invalidateQueries({ queryKey: ['leads', toValue(park)] })
      // A converted lead is a new enterprise of the directory.
      void client.invalidateQueries({ queryKey: ['master', toValue(park)] })
    },
  })
}

export function usePutLead(park: MaybeRefOrGetter<string>) {
  return useLeadWrite(park, (p, { id, body }: { id: string; body: LeadBody }) =>
    unwrap(api.PUT('/api/v1/parks/{park}/leads/{lead}', { params: { path: { park: p, lead: id } }, body })),
  )
}

export function useFollowUp(park: MaybeRefOrGetter<string>) {
  return useLeadWrite(park, (p, { id, body }: { id: string; body: FollowUpBody }) =>
    unwrap(api.POST('/api/v1/parks/{park}/leads/{lead}/follow-ups', { params: { path: { park: p, lead: id } }, body })),
  )
}

export function useLeadAction(park: MaybeRefOrGetter<string>) {
  return useLeadWrite(
    park,
    (p, { id, action, reason, enterprise_id }: { id: string; action: LeadActionName; reason?: string; enterprise_id?: string }) =>
      unwrap(
        api.POST('/api/v1/parks/{park}/leads/{lead}/actions', {
          params: { path: { park: p, lead: id } },
          body: { action, reason: reason ?? null, enterprise_id: enterprise_id ?? null },
        }),
      ),
  )
}

/** What each state allows, as `cloud_hub::leads` checks it. */
export function leadActionsFor(s: LeadState): LeadActionName[] {
  switch (s) {
    case 'new':
    case 'following':
      return ['intent', 'convert', 'lose']
    case 'intent':
      return ['convert', 'lose']
    case 'lost':
      return ['reopen']
    default:
      return []
  }
}
