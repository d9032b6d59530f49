// Measures the edge console's point list and live view in Chromium against a building of
// 5,000 points (`smartpark bench console` starts that edge, feeds its panels, and runs this):
//
// - the list scrolled from the first point to the last in SECONDS, frames counted in each
//   second (the lowest second is `console_scroll_fps`), beside a bare page that holds all
//   5,000 rows in plain HTML scrolled the same way (the anchor);
// - the live view at the top of the list while the caller publishes updates to its points:
//   this prints `live`, the caller publishes for SECONDS and answers `done VALUE SENT
//   OFFERED` (the last value written to every followed point, plus its index; how many
//   updates it sent; at what rate). Updates are counted as the page's stream hands them to
//   the view; the lag is until the last value is on screen.
//
// Prints `name: value unit` lines. Usage: node list.mjs URL USERNAME PASSWORD SECONDS
import { createInterface } from 'node:readline'
import { chromium } from '@playwright/test'

const [url, username, password, secondsArg] = process.argv.slice(2)
const seconds = Number(secondsArg ?? 10)
const input = createInterface({ input: process.stdin })
const lines = input[Symbol.asyncIterator]()

const browser = await chromium.launch({
  executablePath: process.env.SMARTPARK_CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox'],
})
const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, locale: 'zh-CN' })
const login = await context.request.post(`${url}/api/v1/auth/login`, { data: { username, password } })
if (!login.ok()) throw new Error(`login failed: ${login.status()} ${await login.text()}`)

// Counts what the page's live streams hand to the view, without touching the app's code.
await context.addInitScript(() => {
  const w = window
  w.__live = { count: 0, first: 0, last: 0 }
  const add = EventSource.prototype.addEventListener
  EventSource.prototype.addEventListener = function (type, listener, options) {
    if (type !== 'samples') return add.call(this, type, listener, options)
    return add.call(
      this,
      type,
      (e) => {
        listener(e)
        let n = 0
        for (let i = e.data.indexOf('"point"'); i >= 0; i = e.data.indexOf('"point"', i + 7)) n++
        const now = performance.now()
        if (w.__live.count === 0) w.__live.first = now
        w.__live.count += n
        w.__live.last = now
      },
      options,
    )
  }
})

/** Scrolls `selector` from top to bottom in `ms`, one step per frame; frames per second. */
async function scrollFrames(page, selector, ms) {
  const stamps = await page.evaluate(
    ([selector, ms]) =>
      new Promise((resolve) => {
        const el = document.querySelector(selector)
        const span = el.scrollHeight - el.clientHeight
        const stamps = []
        const start = performance.now()
        const step = (now) => {
          stamps.push(now)
          const f = Math.min(1, (now - start) / ms)
          el.scrollTop = f * span
          if (f < 1) requestAnimationFrame(step)
          else resolve(stamps)
        }
        requestAnimationFrame(step)
      }),
    [selector, ms],
  )
  return perSecond(stamps)
}

/** Frames in each whole second of a run of frame times: lowest and mean. */
function perSecond(stamps) {
  const start = stamps[0]
  const buckets = []
  for (const t of stamps) {
    const b = Math.floor((t - start) / 1000)
    buckets[b] = (buckets[b] ?? 0) + 1
  }
  const whole = buckets.slice(0, Math.max(1, Math.floor((stamps.at(-1) - start) / 1000)))
  return {
    min: Math.min(...whole),
    mean: (stamps.length - 1) / ((stamps.at(-1) - start) / 1000),
  }
}

// The console's point list.
const page = await context.newPage()
await page.goto(`${url}/points`)
await page.getByTestId('points-total').filter({ hasText: '5000' }).waitFor()
await page.getByTestId('value-panel-00/p000').filter({ hasText: /\d/ }).waitFor()
await page.waitForTimeout(1000)
const list = await scrollFrames(page, '[data-testid="points-scroller"]', seconds * 1000)

// The anchor: the same browser scrolling 5,000 plain rows, all in the page.
const bare = await context.newPage()
const rows = Array.from(
  { length: 5000 },
  (_, i) => `<tr><td>panel-${String(Math.floor(i / 500)).padStart(2, '0')}/p${String(i % 500).padStart(3, '0')}</td><td>${i}</td><td>good</td></tr>`,
).join('')
await bare.setContent(
  `<div id="s" style="height:640px;overflow-y:auto"><table style="width:100%;border-collapse:collapse">${rows}</table></div>`,
)
const anchor = await scrollFrames(bare, '#s', seconds * 1000)
await bare.close()

// The live view: the top of the list, its stream following the first page of points.
await page.evaluate(() => {
  document.querySelector('[data-testid="points-scroller"]').scrollTop = 0
})
await page.getByTestId('value-panel-00/p000').waitFor()
await page.waitForTimeout(1500)
await page.evaluate(() => {
  window.__live = { count: 0, first: 0, last: 0 }
  window.__frames = []
  const step = (now) => {
    window.__frames.push(now)
    if (!window.__framesStop) requestAnimationFrame(step)
  }
  requestAnimationFrame(step)
})
console.log('live')
const answer = (await lines.next()).value ?? ''
const [, value, sent, offered] = answer.split(' ').map(Number)
const asked = Date.now()
await page.getByTestId('value-panel-00/p000').filter({ hasText: new RegExp(`^${value}$`) }).waitFor({ timeout: 30_000 })
const lag = Date.now() - asked
const live = await page.evaluate(() => {
  window.__framesStop = true
  return { ...window.__live, frames: window.__frames }
})
input.close()
await browser.close()

// The last message (one update per followed point) is not part of the measured rate.
const followed = 100
const counted = Math.max(0, live.count - followed)
const liveFps = perSecond(live.frames)
console.log(`console_scroll_fps: ${list.min} fps`)
console.log(`console_scroll_fps_mean: ${list.mean.toFixed(0)} fps`)
console.log(`anchor_bare_list_scroll_fps: ${anchor.min} fps`)
console.log(`console_live_updates_per_s: ${(counted / ((live.last - live.first) / 1000)).toFixed(0)} updates/s`)
console.log(`console_live_delivered_pct: ${((100 * counted) / sent).toFixed(1)} %`)
console.log(`console_live_lag_ms: ${lag} ms`)
console.log(`console_live_fps: ${liveFps.min} fps`)
console.log(`anchor_live_offered_updates_per_s: ${offered} updates/s`)
