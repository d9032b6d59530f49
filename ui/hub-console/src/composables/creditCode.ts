// The unified social credit code (统一社会信用代码, GB 32100-2015) an invoice's buyer is named
// by, checked before it is sent as the hub checks it (`cloud_hub::payments::is_credit_code`):
// 18 characters of 0-9 and A-Z less I, O, S, V and Z, the last a check character over the
// other seventeen.
const CHARS = '0123456789ABCDEFGHJKLMNPQRTUWXY'
const WEIGHTS = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28]

export function isCreditCode(code: string): boolean {
  if (code.length !== 18) return false
  const values = [...code].map((c) => CHARS.indexOf(c))
  if (values.some((v) => v < 0)) return false
  const sum = WEIGHTS.reduce((s, w, i) => s + w * values[i]!, 0)
  return values[17] === (31 - (sum % 31)) % 31
}
