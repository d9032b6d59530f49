/** `role@enterprise:P/E` grants, as `{ park, enterprise }`. */
export function enterprisesOf(grants: readonly string[]): { park: string; enterprise: string }[] {
  const seen = new Set<string>()
  const out: { park: string; enterprise: string }[] = []
  for (const g of grants) {
    const m = /@enterprise:([^/]+)\/(.+)$/.exec(g)
    if (m && !seen.has(`${m[1]}/${m[2]}`)) {
      seen.add(`${m[1]}/${m[2]}`)
      out.push({ park: m[1]!, enterprise: m[2]! })
    }
  }
  return out
}
