import { defineConfig } from '@playwright/test'

// End-to-end tests of the hub console against a real hub with a real edge enrolled and
// synced over QUIC, which tests/hil/hub_console.rs starts and names in SMARTPARK_HUB_URL.
// Chromium is Debian's (the test command installs it).
const chromium = process.env.SMARTPARK_CHROMIUM ?? '/usr/bin/chromium'

export default defineConfig({
  testDir: './e2e',
  outputDir: process.env.SMARTPARK_E2E_OUTPUT ?? 'test-results',
  timeout: 90_000,
  expect: { timeout: 20_000 },
  workers: 1,
  retries: 0,
  reporter: [['list']],
  use: {
    baseURL: process.env.SMARTPARK_HUB_URL,
    locale: 'zh-CN',
    trace: 'retain-on-failure',
    screenshot: 'only-on-failure',
    launchOptions: { executablePath: chromium, args: ['--no-sandbox'] },
  },
  projects: [{ name: 'desktop', use: { viewport: { width: 1440, height: 900 } } }],
})
