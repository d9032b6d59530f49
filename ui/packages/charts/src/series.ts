import type { Point } from './downsample'

/** A history row as both APIs answer it: a raw sample, or a rollup bucket. */
export type HistoryRow = { ts: number; value?: unknown } | { bucket: number; avg?: number | null }

/** A history's rows as chart points (milliseconds, value): rollups by their mean, booleans as 1 and 0. */
export function seriesOf(rows: readonly HistoryRow[]): Point[] {
  return rows.map((r) => {
    if ('bucket' in r) return [r.bucket / 1000, r.avg ?? null]
    const v = r.value
    return [r.ts / 1000, typeof v === 'number' ? v : v === true ? 1 : v === false ? 0 : null]
  })
}

/** The line chart of one point over time, zoomable. */
export function lineOption(series: Point[], name: string, unit = '') {
  return {
    animation: false,
    grid: { left: 56, right: 16, top: 16, bottom: 64 },
    tooltip: { trigger: 'axis' },
    xAxis: { type: 'time' },
    yAxis: { type: 'value', scale: true, name: unit },
    dataZoom: [{ type: 'inside' }, { type: 'slider' }],
    series: [{ type: 'line', showSymbol: false, data: series, name, connectNulls: false }],
  }
}
