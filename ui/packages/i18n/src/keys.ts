/** Every leaf key of a message tree, dotted (`common.error.title`). */
export function keysOf(tree: object, prefix = ''): string[] {
  return Object.entries(tree).flatMap(([k, v]) =>
    v !== null && typeof v === 'object' ? keysOf(v as object, `${prefix}${k}.`) : [`${prefix}${k}`],
  )
}

/** Keys of `schema` missing from `other`, and keys of `other` that `schema` lacks. */
export function missingKeys(schema: object, other: object): { missing: string[]; extra: string[] } {
  const a = new Set(keysOf(schema))
  const b = new Set(keysOf(other))
  return {
    missing: [...a].filter((k) => !b.has(k)).sort(),
    extra: [...b].filter((k) => !a.has(k)).sort(),
  }
}
