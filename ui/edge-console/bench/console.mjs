// Measures the edge console in Chromium against a running edge (`smartpark bench console`
// starts the demo and runs this): the first screen after login, the JavaScript the first
// load fetches (gzip as served), and, as the anchor, the same browser's first paint of a
// bare page from the same node. Prints `name: value unit` lines.
// Usage: node console.mjs URL USERNAME PASSWORD RUNS
import { chromium } from '@playwright/test'

const [url, username, password, runsArg] = process.argv.slice(2)
const runs = Number(runsArg ?? 5)
const browser = await chromium.launch({
  executablePath: process.env.SMARTPARK_CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox'],
})

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]
}

async function loggedInContext() {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, locale: 'zh-CN' })
  const r = await context.request.post(`${url}/api/v1/auth/login`, { data: { username, password } })
  if (!r.ok()) throw new Error(`login failed: ${r.status()} ${await r.text()}`)
  return context
}

const firstScreen = []
const jsBytes = []
const anchor = []
for (let i = 0; i < runs; i++) {
  const context = await loggedInContext()
  const page = await context.newPage()
  await page.goto(`${url}/overview`)
  // The first screen: the overview's figures rendered from the node's answers.
  await page.waitForFunction(() => {
    const v = document.querySelector('[data-testid="devices-online"] .value')
    return v && /\d+ \/ \d+/.test(v.textContent ?? '') && !/0 \/ 0/.test(v.textContent ?? '')
  })
  firstScreen.push(await page.evaluate(() => performance.now()))
  jsBytes.push(
    await page.evaluate(() =>
      performance
        .getEntriesByType('resource')
        .filter((e) => e.name.endsWith('.js'))
        .reduce((sum, e) => sum + e.encodedBodySize, 0),
    ),
  )
  // The anchor: a bare page from the same node, to its first paint.
  const bare = await context.newPage()
  await bare.goto(`${url}/api/v1/openapi.json`)
  anchor.push(
    await bare.evaluate(() => {
      const p = performance.getEntriesByType('paint').find((e) => e.name === 'first-paint')
      return p ? p.startTime : performance.now()
    }),
  )
  await context.close()
}
await browser.close()

console.log(`console_first_screen_ms: ${median(firstScreen).toFixed(0)} ms`)
console.log(`console_js_gzip_kb: ${(median(jsBytes) / 1024).toFixed(1)} KB`)
console.log(`anchor_bare_page_first_paint_ms: ${median(anchor).toFixed(0)} ms`)
