import { test as base, expect, type Page } from '@playwright/test'
import { execFileSync } from 'node:child_process'
import { createHmac } from 'node:crypto'
import { logIn as logInAt, screenshots } from '../../e2e/shared'

/** The accounts tests/hil/hub_console.rs made: the park's managers, its finance officer,
 * enterprise e1's admin, and (for tenancy.spec.ts) the leasing officer and the admin of the
 * enterprise a lead becomes. */
const password = process.env.SMARTPARK_PASSWORD ?? ''
export const manager = { username: process.env.SMARTPARK_MANAGER ?? '', password }
export const reviewer = { username: process.env.SMARTPARK_REVIEWER ?? '', password }
export const finance = { username: process.env.SMARTPARK_FINANCE ?? '', password }
export const enterpriseAdmin = { username: process.env.SMARTPARK_ENTERPRISE_ADMIN ?? '', password }
export const leasing = { username: process.env.SMARTPARK_LEASING ?? '', password }
export const tenantAdmin = { username: process.env.SMARTPARK_TENANT_ADMIN ?? '', password }

/** The current code of a TOTP secret (base32, as the account page shows it): RFC 6238 with
 * HMAC-SHA1, 30-second steps and 6 digits, as an authenticator app works it out. */
export function totp(secret: string, now = Date.now()): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'
  let bits = ''
  for (const c of secret.replace(/[\s=]/g, '').toUpperCase()) {
    const v = alphabet.indexOf(c)
    if (v < 0) throw new Error(`not base32: ${c}`)
    bits += v.toString(2).padStart(5, '0')
  }
  const key = Buffer.from((bits.match(/.{8}/g) ?? []).map((b) => parseInt(b, 2)))
  const counter = Buffer.alloc(8)
  counter.writeBigUInt64BE(BigInt(Math.floor(now / 1000 / 30)))
  const mac = createHmac('sha1', key).update(counter).digest()
  const offset = mac[mac.length - 1]! & 0x0f
  const code = (mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000
  return String(code).padStart(6, '0')
}

/** Types a date into an Element Plus date picker and takes it. */
export async function pickDate(input: ReturnType<Page['locator']>, value: string) {
  await input.click()
  await input.fill(value)
  await input.press('Enter')
  await expect(input).toHaveValue(value)
}

/** Logs in through the form, with the keyboard only, and waits for the page the role lands on. */
export const logIn = (page: Page, who: { username: string; password: string }, landing: RegExp) => logInAt(page, who, landing)

/** Presents a card at door `door`'s reader of the edge, as the reader's controller publishes it. */
export function presentCard(door: string, value: string) {
  const [host, port] = (process.env.SMARTPARK_EDGE_MQTT ?? '').split(':')
  execFileSync('mosquitto_pub', [
    '-h', host ?? '127.0.0.1', '-p', port ?? '1883', '-q', '1',
    '-t', `door/${door}/read`,
    '-m', JSON.stringify({ type: 'card', value, reader: 'in' }),
  ])
}

export { screenshots }
export const test = base
export { expect }
