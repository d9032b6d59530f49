import { describe, expect, it } from 'vitest'
import { csvCell, csvText } from './csv'

describe('csv', () => {
  it('quotes what needs quoting and leaves the rest', () => {
    expect(csvCell('plain')).toBe('plain')
    expect(csvCell('a,b')).toBe('"a,b"')
    expect(csvCell('say "hi"')).toBe('"say ""hi"""')
    expect(csvCell('two\nlines')).toBe('"two\nlines"')
    expect(csvCell(1234)).toBe('1234')
    expect(csvCell(null)).toBe('')
  })
  it('keeps a spreadsheet from running a cell as a formula', () => {
    expect(csvCell('=SUM(A1)')).toBe("'=SUM(A1)")
    expect(csvCell('@cmd')).toBe("'@cmd")
    expect(csvCell('-1+2')).toBe("'-1+2")
    // Numbers stay numbers, negative ones too.
    expect(csvCell(-5)).toBe('-5')
  })
  it('writes a header, rows, CRLF and a byte-order mark', () => {
    expect(csvText(['a', 'b'], [['1', 2], ['企业', '-0.05']])).toBe("\uFEFFa,b\r\n1,2\r\n企业,-0.05\r\n")
  })
})
