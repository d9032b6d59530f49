import { defineConfig } from '@playwright/test'

/**
 * The Playwright config of a console's end-to-end specs: against the real process whose
 * address the HIL test gives in `urlVariable`, in Debian's Chromium (the test command
 * installs it), in zh-CN, one spec at a time.
 */
export function e2eConfig(urlVariable: string, timeout: number) {
  return defineConfig({
    testDir: './e2e',
    outputDir: process.env.SMARTPARK_E2E_OUTPUT ?? 'test-results',
    timeout,
    expect: { timeout: 20_000 },
    workers: 1,
    retries: 0,
    reporter: [['list']],
    use: {
      baseURL: process.env[urlVariable],
      locale: 'zh-CN',
      trace: 'retain-on-failure',
      screenshot: 'only-on-failure',
      launchOptions: { executablePath: process.env.SMARTPARK_CHROMIUM ?? '/usr/bin/chromium', args: ['--no-sandbox'] },
    },
    projects: [{ name: 'desktop', use: { viewport: { width: 1440, height: 900 } } }],
  })
}
