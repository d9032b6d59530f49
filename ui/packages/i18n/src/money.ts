/**
 * Money as the park keeps it, integer fen, never a float: `yuan(1250)` is `12.50`, and
 * `fenOf('12.5')` is 1250 (digits, at most two after the point; anything else is null).
 * Every figure here is worked out on integers and strings, so no amount is ever rounded
 * by the way JavaScript stores a fraction.
 */
export function yuan(fen: number, grouped = false): string {
  return fixedPoint(fen, 2, grouped)
}

/** The largest amount a user may type: just under 10^10 yuan (the API takes up to 10^12 fen). */
const AMOUNT = /^\s*(\d{1,10})(?:\.(\d{1,2}))?\s*$/

export function fenOf(text: string): number | null {
  const m = AMOUNT.exec(text)
  if (!m) return null
  return Number(m[1]) * 100 + Number((m[2] ?? '').padEnd(2, '0'))
}

/**
 * An integer counted in 10^-places of a unit, written with `places` decimals:
 * `fixedPoint(6532, 4)` is `0.6532`, `fixedPoint(-5, 2)` is `-0.05`; `grouped` puts a comma
 * between thousands of the whole part.
 */
export function fixedPoint(n: number, places: number, grouped = false): string {
  const sign = n < 0 ? '-' : ''
  const digits = String(Math.abs(Math.trunc(n))).padStart(places + 1, '0')
  let whole = places > 0 ? digits.slice(0, -places) : digits
  const part = places > 0 ? digits.slice(-places) : ''
  if (grouped) whole = whole.replace(/\B(?=(\d{3})+$)/g, ',')
  return `${sign}${whole}${part ? '.' + part : ''}`
}

/** The same without the trailing zeros of the fraction: `trimmed(500, 2)` is `5`, `trimmed(5, 2)` is `0.05`. */
export function trimmed(n: number, places: number): string {
  const text = fixedPoint(n, places)
  return text.includes('.') ? text.replace(/\.?0+$/, '') : text
}
