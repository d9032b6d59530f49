import { expect, test, type Page } from '@playwright/test'

/** Logs in through the form, with the keyboard only, and waits for `landing`. */
export async function logIn(page: Page, who: { username: string; password: string }, landing: RegExp) {
  await page.goto('/login')
  await page.getByLabel('用户名').fill(who.username)
  await page.getByLabel('用户名').press('Tab')
  await page.keyboard.type(who.password)
  await page.keyboard.press('Enter')
  await expect(page).toHaveURL(landing)
}

/** A full-page screenshot kept with the test's output, at the three widths the consoles serve. */
export async function screenshots(page: Page, name: string) {
  for (const width of [768, 1024, 1440]) {
    await page.setViewportSize({ width, height: 900 })
    await page.screenshot({ path: test.info().outputPath(`${name}-${width}.png`), fullPage: true })
  }
  await page.setViewportSize({ width: 1440, height: 900 })
}
