// A CSV file from rows of the API's data: RFC 4180 quoting, CRLF line ends and a byte-order
// mark so that spreadsheet programs read the Chinese right. Cells that a spreadsheet would
// run as a formula are prefixed with a quote (a negative amount is left as it is).

const risky = /^[=+\-@\t\r]/
const numeric = /^-?\d+(\.\d+)?$/

export function csvCell(value: string | number | boolean | null | undefined): string {
  if (value === null || value === undefined) return ''
  let text = String(value)
  if (typeof value === 'string' && risky.test(text) && !numeric.test(text)) text = `'${text}`
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text
}

export function csvText(header: readonly string[], rows: readonly (readonly (string | number | boolean | null | undefined)[])[]): string {
  return '\uFEFF' + [header, ...rows].map((r) => r.map(csvCell).join(',')).join('\r\n') + '\r\n'
}

/** Offers `text` to the browser as a file download named `name`. */
export function download(name: string, text: string, type = 'text/csv;charset=utf-8') {
  const url = URL.createObjectURL(new Blob([text], { type }))
  const a = document.createElement('a')
  a.href = url
  a.download = name
  document.body.appendChild(a)
  a.click()
  a.remove()
  setTimeout(() => URL.revokeObjectURL(url), 1_000)
}
