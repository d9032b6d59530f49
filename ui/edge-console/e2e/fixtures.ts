import { test as base, expect, type Page } from '@playwright/test'

/** The accounts tests/hil/console.rs made: one that may write points, one that may not. */
export const engineer = {
  username: process.env.SMARTPARK_ENGINEER ?? '',
  password: process.env.SMARTPARK_ENGINEER_PASSWORD ?? '',
}
export const viewer = {
  username: process.env.SMARTPARK_VIEWER ?? '',
  password: process.env.SMARTPARK_VIEWER_PASSWORD ?? '',
}

/** Logs in through the form, with the keyboard only. */
export async function logIn(page: Page, who: { username: string; password: string }) {
  await page.goto('/login')
  await page.getByLabel('用户名').fill(who.username)
  await page.getByLabel('用户名').press('Tab')
  await page.keyboard.type(who.password)
  await page.keyboard.press('Enter')
  await expect(page).toHaveURL(/\/overview$/)
}

/** A full-page screenshot kept with the test's output, at the three widths the console serves. */
export async function screenshots(page: Page, name: string) {
  for (const width of [768, 1024, 1440]) {
    await page.setViewportSize({ width, height: 900 })
    await page.screenshot({ path: test.info().outputPath(`${name}-${width}.png`), fullPage: true })
  }
  await page.setViewportSize({ width: 1440, height: 900 })
}

export const test = base
export { expect }
