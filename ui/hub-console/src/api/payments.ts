// Money beyond manual receipts, through TanStack Query: orders at the online payment
// provider (their `code_url` shown as a QR code), bank statements matched to bills and the
// lines left for a person, refunds decided by a second finance user, invoice requests, the
// day's reconciliation and the ageing of arrears, the notification outbox; and what an
// enterprise sees of its own (payments, orders, invoice requests, notification contacts).
// Amounts are integer fen as the API gives them.
import { computed, type MaybeRefOrGetter, toValue } from 'vue'
import { keepPreviousData, useMutation, useQuery, useQueryClient } from '@tanstack/vue-query'
import { unwrap, type HubComponents } from '@smartpark/api'
import { api } from './client'

type Schemas = HubComponents['schemas']
export type PayOrderView = Schemas['PayOrderView']
export type StatementView = Schemas['StatementView']
export type BankLineView = Schemas['BankLineView']
export type BankLineState = BankLineView['state']
export type RefundView = Schemas['RefundView']
export type RefundState = RefundView['state']
export type InvoiceView = Schemas['InvoiceView']
export type InvoiceState = InvoiceView['state']
export type InvoiceBody = Schemas['InvoiceBody']
export type ReconciliationView = Schemas['ReconciliationView']
export type AgeingView = Schemas['AgeingView']
export type AgeingRow = Schemas['AgeingRow']
export type NotificationView = Schemas['NotificationView']
export type NotificationState = NotificationView['state']
export type Contact = Schemas['Contact']

export const BANK_LINE_STATES: readonly BankLineState[] = ['unmatched', 'matched', 'assigned', 'ignored']
export const REFUND_STATES: readonly RefundState[] = ['requested', 'approved', 'rejected']
export const INVOICE_STATES: readonly InvoiceState[] = ['requested', 'issued', 'rejected']
export const NOTIFICATION_STATES: readonly NotificationState[] = ['queued', 'sent', 'failed']

const parkSet = (park: MaybeRefOrGetter<string>) => computed(() => toValue(park) !== '')
const opt = <S extends string>(s: S | '') => (s === '' ? undefined : s)

/** Writes of finance refresh every billing query of the park (bills, payments, lines…). */
function useFinanceWrite<A, R>(park: MaybeRefOrGetter<string>, write: (park: string, args: A) => Promise<R>) {
  const client = useQueryClient()
  return useMutation({
    mutationFn: (args: A) => write(toValue(park), args),
    onSettled: () => client.invalidateQueries({ queryKey: ['billing', toValue(park)] }),
  })
}

// ---- online payment ----

/** The park's orders at the provider (of one bill when `bill` is set), every few seconds while `live`. */
export function usePayOrders(park: MaybeRefOrGetter<string>, bill: MaybeRefOrGetter<string>, live: MaybeRefOrGetter<boolean> = false) {
  return useQuery({
    queryKey: computed(() => ['billing', toValue(park), 'pay-orders', toValue(bill)]),
    queryFn: () => {
      const b = toValue(bill)
      return unwrap(api.GET('/api/v1/parks/{park}/pay-orders', { params: { path: { park: toValue(park) }, query: { bill: b === '' ? undefined : b } } }))
    },
    enabled: parkSet(park),
    refetchInterval: () => (toValue(live) ? 5_000 : false),
  })
}

export function useOpenPayOrder(park: MaybeRefOrGetter<string>) {
  return useFinanceWrite(park, (p, bill: string) =>
    unwrap(api.POST('/api/v1/parks/{park}/bills/{bill}/pay-orders', { params: { path: { park: p, bill } } })),
  )
}

export function useQueryPayOrder(park: MaybeRefOrGetter<string>) {
  return useFinanceWrite(park, (p, order: string) =>
    unwrap(api.POST('/api/v1/parks/{park}/pay-orders/{order}/query', { params: { path: { park: p, order } } })),
  )
}

// ---- bank statements ----

export function useImportStatement(park: MaybeRefOrGetter<string>) {
  return useFinanceWrite(park, (p, body: { csv: string; name: string | null; dry_run: boolean }) =>
    unwrap(api.POST('/api/v1/parks/{park}/bank-statements', { params: { path: { park: p } }, body })),
  )
}

export function useBankLines(park: MaybeRefOrGetter<string>, filter: MaybeRefOrGetter<{ state: BankLineState | ''; offset: number; limit: number }>) {
  return useQuery({
    queryKey: computed(() => ['billing', toValue(park), 'bank-lines', toValue(filter)]),
    queryFn: () => {
      const f = toValue(filter)
      return unwrap(
        api.GET('/api/v1/parks/{park}/bank-lines', {
          params: { path: { park: toValue(park) }, query: { state: opt(f.state), offset: f.offset, limit: f.limit } },
        }),
      )
    },
    enabled: parkSet(park),
    placeholderData: keepPreviousData,
  })
}

export function useAssignLine(park: MaybeRefOrGetter<string>) {
  return useFinanceWrite(park, (p, { line, bill }: { line: string; bill: string }) =>
    unwrap(api.POST('/api/v1/parks/{park}/bank-lines/{line}/assign', { params: { path: { park: p, line } }, body: { bill } })),
  )
}

export function useIgnoreLine(park: MaybeRefOrGetter<string>) {
  return useFinanceWrite(park, (p, { line, reason }: { line: string; reason: string }) =>
    unwrap(api.POST('/api/v1/parks/{park}/bank-lines/{line}/ignore', { params: { path: { park: p, line } }, body: { reason } })),
  )
}

// ---- refunds ----

export function useRefunds(park: MaybeRefOrGetter<string>, state: MaybeRefOrGetter<RefundState | ''>) {
  return useQuery({
    queryKey: computed(() => ['billing', toValue(park), 'refunds', toValue(state)]),
    queryFn: () =>
      unwrap(api.GET('/api/v1/parks/{park}/refunds', { params: { path: { park: toValue(park) }, query: { state: opt(toValue(state)) } } })),
    enabled: parkSet(park),
  })
}

export function useRequestRefund(park: MaybeRefOrGetter<string>) {
  return useFinanceWrite(park, (p, { payment, amount_fen, reason }: { payment: string; amount_fen: number; reason: string }) =>
    unwrap(api.POST('/api/v1/parks/{park}/payments/{payment}/refunds', { params: { path: { park: p, payment } }, body: { amount_fen, reason } })),
  )
}

export function useDecideRefund(park: MaybeRefOrGetter<string>) {
  return useFinanceWrite(
    park,
    (p, { refund, decision, reference, note }: { refund: string; decision: 'approve' | 'reject'; reference: string; note: string }) =>
      unwrap(
        api.POST('/api/v1/parks/{park}/refunds/{refund}/decide', {
          params: { path: { park: p, refund } },
          body: { decision, reference: reference || null, note: note || null },
        }),
      ),
  )
}

// ---- invoice requests ----

export function useInvoiceRequests(park: MaybeRefOrGetter<string>, state: MaybeRefOrGetter<InvoiceState | ''>) {
  return useQuery({
    queryKey: computed(() => ['billing', toValue(park), 'invoices', toValue(state)]),
    queryFn: () =>
      unwrap(
        api.GET('/api/v1/parks/{park}/invoice-requests', { params: { path: { park: toValue(park) }, query: { state: opt(toValue(state)) } } }),
      ),
    enabled: parkSet(park),
  })
}

export function useDecideInvoice(park: MaybeRefOrGetter<string>) {
  return useFinanceWrite(
    park,
    (p, { id, decision, invoice_number, note }: { id: string; decision: 'issue' | 'reject'; invoice_number: string; note: string }) =>
      unwrap(
        api.POST('/api/v1/parks/{park}/invoice-requests/{request}/decide', {
          params: { path: { park: p, request: id } },
          body: { decision, invoice_number: invoice_number || null, note: note || null },
        }),
      ),
  )
}

// ---- reports and the outbox ----

export function useReconciliation(park: MaybeRefOrGetter<string>, date: MaybeRefOrGetter<string>) {
  return useQuery({
    queryKey: computed(() => ['billing', toValue(park), 'reconciliation', toValue(date)]),
    queryFn: () =>
      unwrap(api.GET('/api/v1/parks/{park}/reconciliation', { params: { path: { park: toValue(park) }, query: { date: toValue(date) || undefined } } })),
    enabled: parkSet(park),
  })
}

export function useAgeing(park: MaybeRefOrGetter<string>, date: MaybeRefOrGetter<string>) {
  return useQuery({
    queryKey: computed(() => ['billing', toValue(park), 'ageing', toValue(date)]),
    queryFn: () => unwrap(api.GET('/api/v1/parks/{park}/ageing', { params: { path: { park: toValue(park) }, query: { date: toValue(date) || undefined } } })),
    enabled: parkSet(park),
  })
}

export function useNotifications(park: MaybeRefOrGetter<string>, state: MaybeRefOrGetter<NotificationState | ''>) {
  return useQuery({
    queryKey: computed(() => ['billing', toValue(park), 'notifications', toValue(state)]),
    queryFn: () =>
      unwrap(api.GET('/api/v1/parks/{park}/notifications', { params: { path: { park: toValue(park) }, query: { state: opt(toValue(state)) } } })),
    enabled: parkSet(park),
  })
}

// ---- one enterprise's own ----

const mine = (park: MaybeRefOrGetter<string>, enterprise: MaybeRefOrGetter<string>) =>
  computed(() => toValue(park) !== '' && toValue(enterprise) !== '')

function useEnterpriseWrite<A, R>(park: MaybeRefOrGetter<string>, enterprise: MaybeRefOrGetter<string>, write: (park: string, enterprise: string, args: A) => Promise<R>) {
  const client = useQueryClient()
  return useMutation({
    mutationFn: (args: A) => write(toValue(park), toValue(enterprise), args),
    onSettled: () => client.invalidateQueries({ queryKey: ['enterprise', toValue(park), toValue(enterprise)] }),
  })
}

export function useEnterprisePayments(park: MaybeRefOrGetter<string>, enterprise: MaybeRefOrGetter<string>) {
  return useQuery({
    queryKey: computed(() => ['enterprise', toValue(park), toValue(enterprise), 'payments']),
    queryFn: () =>
      unwrap(
        api.GET('/api/v1/parks/{park}/enterprises/{enterprise}/payments', {
          params: { path: { park: toValue(park), enterprise: toValue(enterprise) } },
        }),
      ),
    enabled: mine(park, enterprise),
  })
}

export function useOpenEnterprisePayOrder(park: MaybeRefOrGetter<string>, enterprise: MaybeRefOrGetter<string>) {
  return useEnterpriseWrite(park, enterprise, (p, e, bill: string) =>
    unwrap(api.POST('/api/v1/parks/{park}/enterprises/{enterprise}/bills/{bill}/pay-orders', { params: { path: { park: p, enterprise: e, bill } } })),
  )
}

export function useEnterpriseInvoices(park: MaybeRefOrGetter<string>, enterprise: MaybeRefOrGetter<string>) {
  return useQuery({
    queryKey: computed(() => ['enterprise', toValue(park), toValue(enterprise), 'invoices']),
    queryFn: () =>
      unwrap(
        api.GET('/api/v1/parks/{park}/enterprises/{enterprise}/invoice-requests', {
          params: { path: { park: toValue(park), enterprise: toValue(enterprise) } },
        }),
      ),
    enabled: mine(park, enterprise),
  })
}

export function useRequestInvoice(park: MaybeRefOrGetter<string>, enterprise: MaybeRefOrGetter<string>) {
  return useEnterpriseWrite(park, enterprise, (p, e, body: InvoiceBody) =>
    unwrap(api.POST('/api/v1/parks/{park}/enterprises/{enterprise}/invoice-requests', { params: { path: { park: p, enterprise: e } }, body })),
  )
}

export function useContacts(park: MaybeRefOrGetter<string>, enterprise: MaybeRefOrGetter<string>) {
  return useQuery({
    queryKey: computed(() => ['enterprise', toValue(park), toValue(enterprise), 'contacts']),
    queryFn: () =>
      unwrap(
        api.GET('/api/v1/parks/{park}/enterprises/{enterprise}/notification-contacts', {
          params: { path: { park: toValue(park), enterprise: toValue(enterprise) } },
        }),
      ),
    enabled: mine(park, enterprise),
  })
}

export function usePutContacts(park: MaybeRefOrGetter<string>, enterprise: MaybeRefOrGetter<string>) {
  return useEnterpriseWrite(park, enterprise, (p, e, contacts: Contact[]) =>
    unwrap(
      api.PUT('/api/v1/parks/{park}/enterprises/{enterprise}/notification-contacts', {
        params: { path: { park: p, enterprise: e } },
        body: { contacts },
      }),
    ),
  )
}
