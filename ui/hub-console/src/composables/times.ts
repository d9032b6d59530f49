/** A day's intervals as people type them: `08:00-12:00, 13:00-18:00` (`24:00` ends a day). */
export interface DayInterval {
  start_minute: number
  end_minute: number
}

const hhmm = (m: number) => `${String(Math.trunc(m / 60)).padStart(2, '0')}:${String(m % 60).padStart(2, '0')}`

export function dayText(intervals: readonly DayInterval[]): string {
  return intervals.map((i) => `${hhmm(i.start_minute)}-${hhmm(i.end_minute)}`).join(', ')
}

/** The intervals of `text`, or null when a part is not `HH:MM-HH:MM` with the start first. */
export function parseDay(text: string): DayInterval[] | null {
  const out: DayInterval[] = []
  for (const part of text.split(/[,，]/).map((p) => p.trim()).filter((p) => p !== '')) {
    const m = /^(\d{1,2}):(\d{2})\s*[-–~]\s*(\d{1,2}):(\d{2})$/.exec(part)
    if (!m) return null
    const start = Number(m[1]) * 60 + Number(m[2])
    const end = Number(m[3]) * 60 + Number(m[4])
    if (Number(m[2]) > 59 || Number(m[4]) > 59 || start >= end || end > 1440) return null
    out.push({ start_minute: start, end_minute: end })
  }
  return out
}
