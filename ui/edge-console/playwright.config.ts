import { defineConfig } from '@playwright/test'

// End-to-end tests of the edge console against a real edge node with simulated devices,
// which tests/hil/console.rs starts and names in SMARTPARK_CONSOLE_URL. Chromium is
// Debian's (the test command installs it).
const chromium = process.env.SMARTPARK_CHROMIUM ?? '/usr/bin/chromium'

export default defineConfig({
  testDir: './e2e',
  outputDir: process.env.SMARTPARK_E2E_OUTPUT ?? 'test-results',
  timeout: 60_000,
  expect: { timeout: 15_000 },
  workers: 1,
  retries: 0,
  reporter: [['list']],
  use: {
    baseURL: process.env.SMARTPARK_CONSOLE_URL,
    locale: 'zh-CN',
    trace: 'retain-on-failure',
    screenshot: 'only-on-failure',
    launchOptions: { executablePath: chromium, args: ['--no-sandbox'] },
  },
  projects: [
    { name: 'desktop', use: { viewport: { width: 1440, height: 900 } } },
  ],
})
