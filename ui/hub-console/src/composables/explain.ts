// Where a bill line's amount came from, in words: the run writes the inputs of every line
// into its `detail` (park_model::billing::run), and this turns them into sentences, each an
// i18n key under `billing.explain` with its figures already written out. Figures are
// integers on the wire (fen, basis points, thousandths of a unit, ten-thousandths of a
// yuan) and are written here without floating point.
import { fixedPoint, trimmed, yuan } from '@smartpark/i18n'

export interface Sentence {
  key: string
  params: Record<string, string | number>
  /** Params that are themselves words: the i18n key each is to be shown as. */
  words?: Record<string, string>
}

/** A sentence's params as shown: its words looked up with `t`. */
export function shownParams(s: Sentence, t: (key: string) => string): Record<string, string | number> {
  const out = { ...s.params }
  for (const [name, key] of Object.entries(s.words ?? {})) out[name] = t(key)
  return out
}

type Detail = Record<string, unknown>

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null)
const str = (v: unknown): string => (typeof v === 'string' ? v : typeof v === 'number' ? String(v) : '')
const list = (v: unknown): Detail[] => (Array.isArray(v) ? v.filter((x): x is Detail => x !== null && typeof x === 'object') : [])
const obj = (v: unknown): Detail => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Detail) : {})

/** Basis points as a percentage: 500 is `5`, 5 is `0.05`. */
export const percentOfBp = (bp: number) => trimmed(bp, 2)
/** Thousandths of a unit (Wh of a kWh, litres of a m³) in the unit, up to three places. */
export const units = (milli: number) => trimmed(milli, 3)
/** Ten-thousandths of a yuan (a unit's price) in yuan, four places. */
export const pricePerUnit = (e4: number) => fixedPoint(e4, 4)
/** The exact amount the run worked out (a decimal text of fen, `…` when cut), in yuan. */
export function exactYuan(text: string): string {
  const m = /^(-?)(\d+)(?:\.(\d+))?(…?)$/.exec(text)
  if (!m) return text
  const [, sign, whole, frac = '', cut] = m
  const digits = (whole ?? '0').padStart(3, '0')
  const out = `${digits.slice(0, -2).replace(/^0+(?=\d)/, '')}.${digits.slice(-2)}${frac}`
  return `${sign}${out}${cut}`
}

function rate(r: unknown): Sentence | null {
  const o = obj(r)
  const perM2 = num(o.per_m2_month_fen)
  const fixed = num(o.fixed_month_fen)
  if (perM2 !== null) return { key: 'billing.explain.perM2', params: { rate: yuan(perM2) } }
  if (fixed !== null) return { key: 'billing.explain.fixed', params: { rate: yuan(fixed) } }
  return null
}

function rent(d: Detail): Sentence[] {
  const out: Sentence[] = []
  const r = rate(d.rate)
  if (r) out.push({ key: r.key, params: { ...r.params, area: str(d.area_m2) } })
  for (const p of list(d.parts)) {
    out.push({
      key: 'billing.explain.rentPart',
      params: { year: num(p.contract_year) ?? 1, monthly: yuan(num(p.monthly_fen) ?? 0), days: num(p.days) ?? 0, month: num(d.days_in_month) ?? 0 },
    })
  }
  const esc = num(d.escalation_bp) ?? 0
  if (esc > 0) out.push({ key: 'billing.explain.escalation', params: { pct: percentOfBp(esc) } })
  const free = num(d.free_days) ?? 0
  if (free > 0) out.push({ key: 'billing.explain.freeDays', params: { days: free } })
  return out
}

function propertyFee(d: Detail): Sentence[] {
  const out: Sentence[] = []
  const r = rate(d.rate)
  if (r) out.push({ key: r.key, params: { ...r.params, area: str(d.area_m2) } })
  out.push({ key: 'billing.explain.days', params: { days: num(d.days) ?? 0, month: num(d.days_in_month) ?? 0 } })
  return out
}

/** The hub says how a common meter was shared as `by area leased` or `500 bp`. */
function share(text: string): Sentence {
  if (text === 'by area leased') return { key: 'billing.explain.shareByArea', params: {} }
  const bp = /^(\d+) bp$/.exec(text)
  if (bp) return { key: 'billing.explain.shareKey', params: { pct: percentOfBp(Number(bp[1])) } }
  return { key: 'billing.explain.share', params: { share: text } }
}

function energy(d: Detail): Sentence[] {
  const unit = str(d.unit)
  const out: Sentence[] = []
  const estimated = num(d.estimated_milli) ?? 0
  out.push({
    key: estimated > 0 ? 'billing.explain.usageEstimated' : 'billing.explain.usage',
    params: { tariff: str(d.tariff), total: units(num(d.consumption_milli) ?? 0), estimated: units(estimated), unit },
  })
  for (const m of list(d.meters)) {
    const est = num(m.estimated_milli) ?? 0
    out.push({
      key: est > 0 ? 'billing.explain.meterEstimated' : 'billing.explain.meter',
      params: {
        meter: str(m.meter),
        point: `${str(m.building)} ${str(m.point)}`.trim(),
        from: str(m.from),
        to: str(m.to),
        total: units(num(m.consumption_milli) ?? 0),
        estimated: units(est),
        unit,
        measured: num(m.measured_buckets) ?? 0,
        buckets: num(m.buckets) ?? 0,
      },
    })
    if (typeof m.share === 'string') out.push(share(m.share))
  }
  for (const b of list(d.bands)) {
    const est = num(b.estimated_milli) ?? 0
    out.push({
      key: est > 0 ? 'billing.explain.bandEstimated' : 'billing.explain.band',
      params: {
        band: str(b.band),
        amount: units(num(b.milli) ?? 0),
        estimated: units(est),
        unit,
        price: pricePerUnit(num(b.price_e4) ?? 0),
        since: str(b.version_from),
      },
      words: { band: `billing.bands.${str(b.band)}` },
    })
  }
  for (const tier of list(d.tiers)) {
    out.push({
      key: 'billing.explain.tier',
      params: { above: num(tier.above_units) ?? 0, units: str(tier.units), unit, price: pricePerUnit(num(tier.surcharge_e4) ?? 0) },
    })
  }
  return out
}

function lateFee(d: Detail): Sentence[] {
  return [
    {
      key: 'billing.explain.lateFee',
      params: {
        bill: str(d.bill),
        due: str(d.due),
        grace: num(d.grace_days) ?? 0,
        pct: percentOfBp(num(d.bp_per_day) ?? 0),
        days: num(d.days) ?? 0,
      },
    },
    { key: 'billing.explain.balanceDays', params: { sum: exactYuan(str(d.balance_days_fen)) } },
  ]
}

/** What a line of `charge` with `detail` was worked out from; empty when the detail says nothing known. */
export function explain(charge: string, detail: unknown): Sentence[] {
  const d = obj(detail)
  let out: Sentence[]
  switch (str(d.clause) || charge) {
    case 'deposit':
      out = [{ key: 'billing.explain.deposit', params: { amount: yuan(num(d.deposit_fen) ?? 0) } }]
      break
    case 'rent':
      out = rent(d)
      break
    case 'property_fee':
      out = propertyFee(d)
      break
    case 'electricity':
    case 'common_electricity':
    case 'water':
    case 'common_water':
      out = energy(d)
      break
    case 'late_fee':
      out = lateFee(d)
      break
    default:
      out = []
  }
  if (typeof d.credit_for === 'string') out.push({ key: 'billing.explain.credit', params: { end: str(d.contract_end) } })
  if (typeof d.exact_fen === 'string' && d.exact_fen !== '') out.push({ key: 'billing.explain.exact', params: { exact: exactYuan(d.exact_fen) } })
  return out
}
