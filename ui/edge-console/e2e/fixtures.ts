import { test as base, expect, type Page } from '@playwright/test'
import { logIn as logInAt, screenshots } from '../../e2e/shared'

/** The accounts tests/hil/console.rs made: one that may write points, one that may not. */
export const engineer = {
  username: process.env.SMARTPARK_ENGINEER ?? '',
  password: process.env.SMARTPARK_ENGINEER_PASSWORD ?? '',
}
export const viewer = {
  username: process.env.SMARTPARK_VIEWER ?? '',
  password: process.env.SMARTPARK_VIEWER_PASSWORD ?? '',
}

/** Logs in through the form, with the keyboard only; the console opens on its overview. */
export const logIn = (page: Page, who: { username: string; password: string }) => logInAt(page, who, /\/overview$/)

export { screenshots }
export const test = base
export { expect }
