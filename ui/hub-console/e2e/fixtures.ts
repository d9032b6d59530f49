import { test as base, expect, type Page } from '@playwright/test'
import { execFileSync } from 'node:child_process'
import { logIn as logInAt, screenshots } from '../../e2e/shared'

/** The accounts tests/hil/hub_console.rs made: the park's manager and enterprise e1's admin. */
const password = process.env.SMARTPARK_PASSWORD ?? ''
export const manager = { username: process.env.SMARTPARK_MANAGER ?? '', password }
export const enterpriseAdmin = { username: process.env.SMARTPARK_ENTERPRISE_ADMIN ?? '', password }

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
