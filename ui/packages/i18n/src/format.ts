import { currentLocale } from './index'

/** Bytes for people: 1.2 GB. */
export function bytes(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB']
  let v = n
  let i = 0
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024
    i++
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`
}

const formats = new Map<string, Intl.DateTimeFormat>()

/** A time from microseconds since 1970, in the user's language and time zone. */
export function dateTime(micros: number): string {
  const locale = currentLocale()
  let f = formats.get(locale)
  if (!f) {
    f = new Intl.DateTimeFormat(locale, {
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
      hour12: false,
    })
    formats.set(locale, f)
  }
  return f.format(new Date(micros / 1000))
}

/** A sample's value for display: numbers with at most 3 decimals, booleans as on/off. */
export function value(v: unknown, on = 'ON', off = 'OFF'): string {
  if (v === null || v === undefined) return '—'
  if (typeof v === 'boolean') return v ? on : off
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : v.toFixed(3).replace(/\.?0+$/, '')
  return String(v)
}
