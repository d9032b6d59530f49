import { describe, expect, it } from 'vitest'
import { exactYuan, explain, percentOfBp, pricePerUnit, shownParams, units } from './explain'

// Details as park_model::billing::run writes them.
describe('a bill line explained', () => {
  it('says how rent was worked out: area, rate, days of the month, escalation and free days', () => {
    const detail = {
      clause: 'rent',
      rate: { per_m2_month_fen: 8000 },
      area_m2: '120.50',
      escalation_bp: 500,
      from: '2026-02-01',
      to: '2026-02-28',
      days_in_month: 28,
      free_days: 14,
      parts: [{ contract_year: 1, monthly_fen: 964000, days: 14 }],
      exact_fen: '482000',
    }
    expect(explain('rent', detail)).toEqual([
      { key: 'billing.explain.perM2', params: { rate: '80.00', area: '120.50' } },
      { key: 'billing.explain.rentPart', params: { year: 1, monthly: '9640.00', days: 14, month: 28 } },
      { key: 'billing.explain.escalation', params: { pct: '5' } },
      { key: 'billing.explain.freeDays', params: { days: 14 } },
      { key: 'billing.explain.exact', params: { exact: '4820.00' } },
    ])
  })
  it('says which meters and bands energy came from, and what was estimated', () => {
    const detail = {
      clause: 'electricity',
      tariff: 'power',
      unit: 'kWh',
      consumption_milli: 1234567,
      estimated_milli: 1000,
      bands: [{ version_from: '2026-01-01', band: 'peak', milli: 1234567, estimated_milli: 1000, price_e4: 6532 }],
      tiers: [],
      meters: [
        { meter: 'm1', building: 'b1', point: 'pm1/kwh', from: '2026-01-01', to: '2026-01-31', buckets: 2976, measured_buckets: 2970, consumption_milli: 1234567, estimated_milli: 1000 },
      ],
      exact_fen: '80641.9…',
    }
    const said = explain('electricity', detail)
    expect(said[0]).toEqual({
      key: 'billing.explain.usageEstimated',
      params: { tariff: 'power', total: '1234.567', estimated: '1', unit: 'kWh' },
    })
    expect(said[1]?.key).toBe('billing.explain.meterEstimated')
    expect(said[1]?.params).toMatchObject({ meter: 'm1', point: 'b1 pm1/kwh', measured: 2970, buckets: 2976 })
    expect(said[2]).toEqual({
      key: 'billing.explain.bandEstimated',
      params: { band: 'peak', amount: '1234.567', estimated: '1', unit: 'kWh', price: '0.6532', since: '2026-01-01' },
      words: { band: 'billing.bands.peak' },
    })
    expect(shownParams(said[2]!, (k) => `<${k}>`).band).toBe('<billing.bands.peak>')
    expect(said.at(-1)).toEqual({ key: 'billing.explain.exact', params: { exact: '806.419…' } })
  })
  it('says how a common meter was shared', () => {
    const common = (share: string) =>
      explain('common_electricity', { clause: 'common_electricity', unit: 'kWh', meters: [{ meter: 'm0', share }] }).find((s) => s.key.startsWith('billing.explain.share'))
    expect(common('by area leased')).toEqual({ key: 'billing.explain.shareByArea', params: {} })
    expect(common('2500 bp')).toEqual({ key: 'billing.explain.shareKey', params: { pct: '25' } })
    expect(common('half')).toEqual({ key: 'billing.explain.share', params: { share: 'half' } })
  })
  it('explains deposits, late fees and credits, and says nothing of a detail it does not know', () => {
    expect(explain('deposit', { clause: 'deposit', deposit_fen: 2000000 })).toEqual([
      { key: 'billing.explain.deposit', params: { amount: '20000.00' } },
    ])
    const late = explain('late_fee', { clause: 'late_fee', bill: '202601-e1-1', due: '2026-02-15', grace_days: 10, bp_per_day: 5, days: 3, balance_days_fen: '300000', exact_fen: '150' })
    expect(late[0]).toEqual({ key: 'billing.explain.lateFee', params: { bill: '202601-e1-1', due: '2026-02-15', grace: 10, pct: '0.05', days: 3 } })
    const credit = explain('rent', { clause: 'rent', credit_for: "days after the contract's end", contract_end: '2026-03-10', parts: [] })
    expect(credit.at(-1)).toEqual({ key: 'billing.explain.credit', params: { end: '2026-03-10' } })
    expect(explain('something_new', { clause: 'something_new' })).toEqual([])
    expect(explain('rent', null)).toEqual([])
  })
  it('writes integer figures of each scale exactly', () => {
    expect(percentOfBp(500)).toBe('5')
    expect(percentOfBp(5)).toBe('0.05')
    expect(percentOfBp(1250)).toBe('12.5')
    expect(units(1500)).toBe('1.5')
    expect(units(7)).toBe('0.007')
    expect(pricePerUnit(6532)).toBe('0.6532')
    expect(exactYuan('5')).toBe('0.05')
    expect(exactYuan('-1234.5')).toBe('-12.345')
    expect(exactYuan('not a number')).toBe('not a number')
  })
})

describe('a bill line explained in both languages', () => {
  it('has every sentence in zh-CN and en, with every figure filled in', async () => {
    const { createI18n } = await import('vue-i18n')
    const zh = (await import('../locales/zh-CN')).default
    const en = (await import('../locales/en')).default
    const details: [string, unknown][] = [
      ['rent', { clause: 'rent', rate: { fixed_month_fen: 100000 }, area_m2: '80.00', escalation_bp: 300, days_in_month: 30, free_days: 2, parts: [{ contract_year: 2, monthly_fen: 103000, days: 28 }], exact_fen: '96133.3…', credit_for: 'x', contract_end: '2027-01-31' }],
      ['property_fee', { clause: 'property_fee', rate: { per_m2_month_fen: 1200 }, area_m2: '80.00', days_in_month: 31, days: 31, exact_fen: '96000' }],
      ['deposit', { clause: 'deposit', deposit_fen: 1 }],
      ['common_water', { clause: 'common_water', tariff: 'w', unit: 'm³', consumption_milli: 1, estimated_milli: 0, bands: [{ band: 'deep_valley', milli: 1, estimated_milli: 0, price_e4: 1, version_from: '2026-01-01' }, { band: 'flat', milli: 1, estimated_milli: 1, price_e4: 1, version_from: '2026-01-01' }], tiers: [{ above_units: 10, units: '2.5', surcharge_e4: 300 }], meters: [{ meter: 'w1', share: 'by area leased', estimated_milli: 0 }, { meter: 'w2', share: '10 bp', estimated_milli: 2 }, { meter: 'w3', share: 'odd' }], exact_fen: '1' }],
      ['electricity', { clause: 'electricity', estimated_milli: 5, meters: [] }],
      ['late_fee', { clause: 'late_fee', bill: 'b', due: '2026-01-01', grace_days: 1, bp_per_day: 5, days: 2, balance_days_fen: '1', exact_fen: '0.0005' }],
    ]
    const seen = new Set<string>()
    for (const [locale, messages] of [['zh-CN', zh], ['en', en]] as const) {
      const i18n = createI18n({ legacy: false, locale, messages: { [locale]: messages }, missingWarn: false, fallbackWarn: false })
      const { t, te } = i18n.global
      for (const [charge, detail] of details) {
        for (const s of explain(charge, detail)) {
          seen.add(s.key)
          expect(te(s.key), `${locale} ${s.key}`).toBe(true)
          for (const key of Object.values(s.words ?? {})) expect(te(key), `${locale} ${key}`).toBe(true)
          const text = t(s.key, shownParams(s, (k) => t(k)))
          expect(text, `${locale} ${s.key}`).not.toMatch(/[{}]/)
        }
      }
    }
    // Every sentence the explanation knows was tried.
    expect([...seen].sort()).toEqual(Object.keys(zh.billing.explain).map((k) => `billing.explain.${k}`).sort())
  })
})
