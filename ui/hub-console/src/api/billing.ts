// Leasing and billing on the hub, through TanStack Query: contracts and their transitions,
// bill runs, bills, payments, and an enterprise's own contracts and issued bills. Amounts
// are integer fen as the API gives them; pages show them with `yuan()`.
import { computed, type MaybeRefOrGetter, toValue } from 'vue'
import { keepPreviousData, useMutation, useQuery, useQueryClient } from '@tanstack/vue-query'
import { unwrap, type HubComponents } from '@smartpark/api'
import { api } from './client'

type Schemas = HubComponents['schemas']
export type ContractView = Schemas['ContractView']
export type ContractBody = Schemas['ContractBody']
export type ContractState = ContractView['state']
export type ContractAction = Schemas['ActionBody']['action']
export type HistoryView = Schemas['HistoryView']
export type BillView = Schemas['BillView']
export type BillState = BillView['state']
export type LineView = Schemas['LineView']
export type RunView = Schemas['RunView']
export type PendingView = Schemas['PendingView']
export type PaymentView = Schemas['PaymentView']
export type PaymentBody = Schemas['PaymentBody']

export const CONTRACT_STATES: readonly ContractState[] = [
  'draft',
  'pending_review',
  'rejected',
  'approved',
  'active',
  'expired',
  'terminated',
  'renewed',
  'changed',
  'cancelled',
]
export const BILL_STATES: readonly BillState[] = ['draft', 'issued', 'partly_paid', 'paid', 'overdue']
export const PAYMENT_METHODS: readonly PaymentBody['method'][] = ['transfer', 'cash', 'card', 'other']

/** A page of a filtered list. */
export interface PageArgs {
  offset: number
  limit: number
}

const parkSet = (park: MaybeRefOrGetter<string>) => computed(() => toValue(park) !== '')
const state = <S extends string>(s: S | '') => (s === '' ? undefined : s)

// ---- contracts ----

export function useContracts(park: MaybeRefOrGetter<string>, filter: MaybeRefOrGetter<{ state: ContractState | '' } & PageArgs>) {
  return useQuery({
    queryKey: computed(() => ['leasing', toValue(park), 'contracts', toValue(filter)]),
    queryFn: () => {
      const f = toValue(filter)
      return unwrap(
        api.GET('/api/v1/parks/{park}/contracts', {
          params: { path: { park: toValue(park) }, query: { state: state(f.state), offset: f.offset, limit: f.limit } },
        }),
      )
    },
    enabled: parkSet(park),
    placeholderData: keepPreviousData,
  })
}

export function useContract(park: MaybeRefOrGetter<string>, id: MaybeRefOrGetter<string>) {
  return useQuery({
    queryKey: computed(() => ['leasing', toValue(park), 'contract', toValue(id)]),
    queryFn: () =>
      unwrap(api.GET('/api/v1/parks/{park}/contracts/{contract}', { params: { path: { park: toValue(park), contract: toValue(id) } } })),
    enabled: computed(() => toValue(park) !== '' && toValue(id) !== ''),
  })
}

/** Every write of a contract refreshes the park's contracts and what depends on them. */
function useLeasingWrite<A, R>(park: MaybeRefOrGetter<string>, write: (park: string, args: A) => Promise<R>) {
  const client = useQueryClient()
  return useMutation({
    mutationFn: (args: A) => write(toValue(park), args),
    onSettled: () => {
      void client.invalidateQueries({ queryKey: ['leasing', toValue(park)] })
      // Activation marks spaces leased.
      void client.invalidateQueries({ queryKey: ['master', toValue(park)] })
    },
  })
}

export function usePutContract(park: MaybeRefOrGetter<string>) {
  return useLeasingWrite(park, (p, { id, body }: { id: string; body: ContractBody }) =>
    unwrap(api.PUT('/api/v1/parks/{park}/contracts/{contract}', { params: { path: { park: p, contract: id } }, body })),
  )
}

export function useContractAction(park: MaybeRefOrGetter<string>) {
  return useLeasingWrite(
    park,
    (p, { id, action, reason, last_day }: { id: string; action: ContractAction; reason?: string; last_day?: string }) =>
      unwrap(
        api.POST('/api/v1/parks/{park}/contracts/{contract}/actions', {
          params: { path: { park: p, contract: id } },
          body: { action, reason: reason ?? null, last_day: last_day ?? null },
        }),
      ),
  )
}

/** What each state allows, as `park_model::billing::contract::Contract::apply` does. */
export function actionsFor(s: ContractState): ContractAction[] {
  switch (s) {
    case 'draft':
      return ['submit', 'cancel']
    case 'pending_review':
      return ['approve', 'reject']
    case 'rejected':
      return ['revise', 'cancel']
    case 'approved':
      return ['activate', 'cancel']
    case 'active':
      return ['terminate']
    default:
      return []
  }
}

// ---- bill runs, bills and payments ----

export function useRuns(park: MaybeRefOrGetter<string>) {
  return useQuery({
    queryKey: computed(() => ['billing', toValue(park), 'runs']),
    queryFn: () => unwrap(api.GET('/api/v1/parks/{park}/bill-runs', { params: { path: { park: toValue(park) } } })),
    enabled: parkSet(park),
  })
}

function useBillingWrite<A, R>(park: MaybeRefOrGetter<string>, write: (park: string, args: A) => Promise<R>) {
  const client = useQueryClient()
  return useMutation({
    mutationFn: (args: A) => write(toValue(park), args),
    onSettled: () => client.invalidateQueries({ queryKey: ['billing', toValue(park)] }),
  })
}

export function useRunMonth(park: MaybeRefOrGetter<string>) {
  return useBillingWrite(park, (p, month: string) =>
    unwrap(api.POST('/api/v1/parks/{park}/bill-runs', { params: { path: { park: p } }, body: { month } })),
  )
}

export interface BillFilter extends PageArgs {
  month: string
  state: BillState | ''
}

const billQuery = (f: BillFilter) => ({ month: f.month === '' ? undefined : f.month, state: state(f.state), offset: f.offset, limit: f.limit })

export function useBills(park: MaybeRefOrGetter<string>, filter: MaybeRefOrGetter<BillFilter>) {
  return useQuery({
    queryKey: computed(() => ['billing', toValue(park), 'bills', toValue(filter)]),
    queryFn: () =>
      unwrap(api.GET('/api/v1/parks/{park}/bills', { params: { path: { park: toValue(park) }, query: billQuery(toValue(filter)) } })),
    enabled: parkSet(park),
    placeholderData: keepPreviousData,
  })
}

/** Every bill the filter matches, page after page (for an export). */
export async function allBills(park: string, filter: Omit<BillFilter, 'offset' | 'limit'>): Promise<BillView[]> {
  const out: BillView[] = []
  for (;;) {
    const page = await unwrap(
      api.GET('/api/v1/parks/{park}/bills', { params: { path: { park }, query: billQuery({ ...filter, offset: out.length, limit: 500 }) } }),
    )
    out.push(...page.bills)
    if (page.bills.length === 0 || out.length >= page.total) return out
  }
}

export function useBill(park: MaybeRefOrGetter<string>, id: MaybeRefOrGetter<string>, enabled: MaybeRefOrGetter<boolean> = true) {
  return useQuery({
    queryKey: computed(() => ['billing', toValue(park), 'bill', toValue(id)]),
    queryFn: () => unwrap(api.GET('/api/v1/parks/{park}/bills/{bill}', { params: { path: { park: toValue(park), bill: toValue(id) } } })),
    enabled: computed(() => toValue(enabled) && toValue(park) !== '' && toValue(id) !== ''),
  })
}

export function usePayments(park: MaybeRefOrGetter<string>, bill: MaybeRefOrGetter<string>) {
  return useQuery({
    queryKey: computed(() => ['billing', toValue(park), 'payments', toValue(bill)]),
    queryFn: () => {
      const b = toValue(bill)
      return unwrap(api.GET('/api/v1/parks/{park}/payments', { params: { path: { park: toValue(park) }, query: { bill: b === '' ? undefined : b } } }))
    },
    enabled: parkSet(park),
  })
}

export function useIssueBill(park: MaybeRefOrGetter<string>) {
  return useBillingWrite(park, (p, { id, date }: { id: string; date?: string }) =>
    unwrap(api.POST('/api/v1/parks/{park}/bills/{bill}/issue', { params: { path: { park: p, bill: id } }, body: { date: date ?? null } })),
  )
}

export function useRecordPayment(park: MaybeRefOrGetter<string>) {
  return useBillingWrite(park, (p, { id, body }: { id: string; body: PaymentBody }) =>
    unwrap(api.POST('/api/v1/parks/{park}/bills/{bill}/payments', { params: { path: { park: p, bill: id } }, body })),
  )
}

// ---- one enterprise's own ----

export function useEnterpriseContracts(park: MaybeRefOrGetter<string>, enterprise: MaybeRefOrGetter<string>, args: MaybeRefOrGetter<PageArgs>) {
  return useQuery({
    queryKey: computed(() => ['enterprise', toValue(park), toValue(enterprise), 'contracts', toValue(args)]),
    queryFn: () =>
      unwrap(
        api.GET('/api/v1/parks/{park}/enterprises/{enterprise}/contracts', {
          params: { path: { park: toValue(park), enterprise: toValue(enterprise) }, query: toValue(args) },
        }),
      ),
    enabled: computed(() => toValue(enterprise) !== ''),
    placeholderData: keepPreviousData,
  })
}

export function useEnterpriseBills(
  park: MaybeRefOrGetter<string>,
  enterprise: MaybeRefOrGetter<string>,
  filter: MaybeRefOrGetter<BillFilter>,
) {
  return useQuery({
    queryKey: computed(() => ['enterprise', toValue(park), toValue(enterprise), 'bills', toValue(filter)]),
    queryFn: () =>
      unwrap(
        api.GET('/api/v1/parks/{park}/enterprises/{enterprise}/bills', {
          params: { path: { park: toValue(park), enterprise: toValue(enterprise) }, query: billQuery(toValue(filter)) },
        }),
      ),
    enabled: computed(() => toValue(enterprise) !== '' && toValue(park) !== ''),
    placeholderData: keepPreviousData,
  })
}

/** The park's electricity and water tariffs (contracts name them). */
export function useUtilityTariffs(park: MaybeRefOrGetter<string>, enabled: MaybeRefOrGetter<boolean> = true) {
  return useQuery({
    queryKey: computed(() => ['leasing', toValue(park), 'utility-tariffs']),
    queryFn: () => unwrap(api.GET('/api/v1/parks/{park}/utility-tariffs', { params: { path: { park: toValue(park) } } })),
    enabled: computed(() => toValue(enabled) && toValue(park) !== ''),
  })
}
