/** A point of a series: time in milliseconds, value (null for a gap). */
export type Point = [number, number | null]

/**
 * Largest-triangle-three-buckets down-sampling to at most `threshold` points, keeping the
 * first and last points and the shape of peaks; gaps (null values) are kept as gaps.
 */
export function lttb(points: readonly Point[], threshold: number): Point[] {
  if (threshold >= points.length || threshold < 3) return points.slice()
  const out: Point[] = [points[0]!]
  const every = (points.length - 2) / (threshold - 2)
  let a = 0
  for (let i = 0; i < threshold - 2; i++) {
    const start = Math.floor((i + 1) * every) + 1
    const end = Math.min(Math.floor((i + 2) * every) + 1, points.length)
    let avgX = 0
    let avgY = 0
    let n = 0
    for (let j = start; j < end; j++) {
      const v = points[j]![1]
      if (v === null) continue
      avgX += points[j]![0]
      avgY += v
      n++
    }
    if (n > 0) {
      avgX /= n
      avgY /= n
    }
    const rangeStart = Math.floor(i * every) + 1
    const rangeEnd = Math.floor((i + 1) * every) + 1
    const [ax, ay] = points[a]!
    let best = rangeStart
    let bestArea = -1
    for (let j = rangeStart; j < rangeEnd; j++) {
      const [x, y] = points[j]!
      if (y === null) {
        best = j
        break
      }
      const area = Math.abs((ax - avgX) * (y - (ay ?? y)) - (ax - x) * (avgY - (ay ?? y)))
      if (area > bestArea) {
        bestArea = area
        best = j
      }
    }
    out.push(points[best]!)
    a = best
  }
  out.push(points[points.length - 1]!)
  return out
}
