import { readFileSync } from 'node:fs'
import type { BrowserContext, Page } from '@playwright/test'
import { expect, finance, logIn, manager, pickDate, screenshots, tenantAdmin, test, totp, leasing } from './fixtures'

// A company from first contact to a paid bill and its invoice, against the real hub
// (tests/hil/hub_console.rs made the vacant rooms b1-201 of 100 m² and b1-202 on floor 2,
// and an active contract k-e2 of enterprise e2 on b1-102): the leasing officer takes the
// lead, follows it up, confirms its intent on b1-201 and converts it into the enterprise
// "nova", drafts and submits its contract from the lead; a park manager approves and
// activates it and sees the room leased on the space map; finance runs and issues the
// month's bills, imports the bank's statement whose line names nova's bill (matched by that
// reference; another line is set aside), sees the bill paid, the notice in the outbox and
// the day's reconciliation balanced, and exports the reports; nova's admin sees its own
// bill and payment only and asks for an invoice, which finance issues; a refund finance
// asks for cannot be approved by the same user.
test.describe.configure({ mode: 'serial' })

const ymd = (d: Date) => `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`
const now = new Date()
const today = ymd(now)
const nextWeek = ymd(new Date(now.getTime() + 7 * 86_400_000))
const month = today.slice(0, 7)
const start = `${month}-01`
const end = `${now.getFullYear() + 1}-12-31`
const novaBill = `${month.replace('-', '')}-nova-1`
const e2Bill = `${month.replace('-', '')}-e2-1`
const taxNumber = '91110108MA01C2D3EG'

// Finance logs in once (a second login would need the next TOTP step) and nova's admin
// works beside it in a browser context of its own.
let financePage: Page
let tenantPage: Page
const contexts: BrowserContext[] = []
test.beforeAll(async ({ browser }) => {
  const use = test.info().project.use
  const options = { baseURL: use.baseURL, locale: use.locale, viewport: use.viewport }
  contexts.push(await browser.newContext(options), await browser.newContext(options))
  financePage = await contexts[0]!.newPage()
  tenantPage = await contexts[1]!.newPage()
})
test.afterAll(async () => {
  for (const c of contexts) await c.close()
})

test('the leasing officer takes a lead from first contact to a submitted contract', async ({ page }) => {
  await logIn(page, leasing, /\/overview$/)
  await expect(page.getByRole('menuitem', { name: '账单与收款', exact: true })).toHaveCount(0)
  await page.getByRole('menuitem', { name: '招商线索', exact: true }).click()
  await page.getByTestId('add-lead').click()
  const dialog = page.getByTestId('lead-dialog')
  await dialog.locator('input[name="lead-id"]').fill('l-nova')
  await dialog.locator('input[name="lead-company"]').fill('Nova Robotics')
  await dialog.locator('input[name="lead-contact"]').fill('王敏')
  await dialog.locator('input[name="lead-phone"]').fill('13812345678')
  // An area with three decimals is refused before anything is sent.
  await dialog.locator('input[name="lead-area"]').fill('100.125')
  await dialog.getByTestId('save-lead').click()
  await expect(dialog.getByRole('alert')).toContainText('最多两位小数')
  await dialog.locator('input[name="lead-area"]').fill('100')
  await dialog.locator('input[name="lead-budget"]').fill('95.5')
  await dialog.getByTestId('lead-spaces').click()
  await page.getByRole('option', { name: /b1-201/ }).click()
  await dialog.locator('input[name="lead-company"]').click()
  await dialog.getByTestId('save-lead').click()
  await expect(dialog).toBeHidden()

  const drawer = page.getByTestId('lead-drawer')
  await expect(drawer.getByTestId('lead-state')).toHaveText('新线索')
  // The lead's owner reads the phone number whole.
  await expect(drawer.getByTestId('lead-phone')).toHaveText('13812345678')
  await expect(drawer.getByTestId('lead-info')).toContainText('¥95.50/㎡·月')
  await drawer.locator('textarea[name="follow-up-note"]').fill('带看 201 室，对朝向满意')
  await pickDate(drawer.locator('input[name="follow-up-next"]'), nextWeek)
  await drawer.getByTestId('save-follow-up').click()
  await expect(drawer.getByTestId('lead-state')).toHaveText('跟进中')
  await expect(drawer.getByTestId('follow-ups')).toContainText('带看 201 室')
  await expect(drawer.getByTestId('follow-ups')).toContainText(`下次跟进 ${nextWeek}`)
  await drawer.getByTestId('lead-act-intent').click()
  await expect(drawer.getByTestId('lead-state')).toHaveText('有意向')
  await screenshots(page, 'lead')

  await drawer.getByTestId('lead-act-convert').click()
  await page.locator('input[name="convert-enterprise"]').fill('nova')
  await page.getByTestId('confirm-lead-act').click()
  await expect(drawer.getByTestId('lead-state')).toHaveText('已转化')
  await expect(drawer.getByTestId('lead-enterprise')).toContainText('nova')

  // The contract is drafted from the lead: its enterprise and spaces are already chosen.
  await drawer.getByTestId('draft-contract').click()
  const contract = page.getByTestId('contract-dialog')
  await expect(contract.getByTestId('contract-enterprise')).toContainText('Nova Robotics (nova)')
  await expect(contract.getByTestId('contract-spaces')).toContainText('b1-201')
  await expect(contract).toContainText('共 100 ㎡')
  await contract.locator('input[name="contract-id"]').fill('k-nova')
  await pickDate(contract.locator('input[name="contract-start"]'), start)
  await pickDate(contract.locator('input[name="contract-end"]'), end)
  await contract.locator('input[name="contract-rent"]').fill('90')
  await contract.getByTestId('save-contract').click()
  await expect(page).toHaveURL(/\/contracts\?open=k-nova$/)
  const detail = page.getByTestId('contract-drawer')
  await expect(detail.getByTestId('contract-state')).toHaveText('草稿')
  await detail.getByTestId('act-submit').click()
  await expect(detail.getByTestId('contract-state')).toHaveText('待审核')
  await screenshots(page, 'lead-contract')
})

test('a park manager approves and activates it, and the room shows leased', async ({ page }) => {
  await logIn(page, manager, /\/overview$/)
  await page.goto('/contracts?open=k-nova')
  const drawer = page.getByTestId('contract-drawer')
  await drawer.getByTestId('act-approve').click()
  await expect(drawer.getByTestId('contract-state')).toHaveText('已审核')
  await drawer.getByTestId('act-activate').click()
  await expect(drawer.getByTestId('contract-state')).toHaveText('生效中')
  await page.keyboard.press('Escape')

  await page.getByRole('menuitem', { name: '空间分布', exact: true }).click()
  const floor = page.getByTestId('floor-b1-2')
  await expect(floor).toContainText('空置 60 / 160 ㎡')
  await expect(page.getByTestId('tile-b1-201')).toHaveClass(/leased/)
  await expect(page.getByTestId('tile-b1-202')).toHaveClass(/vacant/)
  // The tiles are reached with the keyboard and say what they are.
  await page.getByTestId('tile-b1-201').focus()
  await expect(page.getByTestId('space-details')).toContainText('已租')
  await page.keyboard.press('Tab')
  await expect(page.getByTestId('space-details')).toContainText('b1-202')
  await expect(page.getByTestId('space-details')).toContainText('空置')
  await screenshots(page, 'space-map')
})

let total = ''

test('finance runs and issues the bills; online payment needs a provider', async () => {
  const page = financePage
  await logIn(page, finance, /\/account$/)
  await page.getByRole('button', { name: '开启' }).click()
  const secret = (await page.locator('code.secret').textContent()) ?? ''
  await page.getByLabel('动态验证码').fill(totp(secret))
  await page.getByRole('button', { name: '确认' }).click()
  await expect(page.getByText('已开启')).toBeVisible()

  await page.goto('/billing')
  await page.getByTestId('run-bills').click()
  const result = page.getByTestId('run-result')
  await result.getByTestId(`run-bill-${novaBill}`).click()
  const drawer = page.getByTestId('bill-drawer')
  await expect(drawer.getByTestId('bill-state')).toHaveText('草稿')
  await drawer.getByTestId('issue-bill').click()
  await page.getByTestId('confirm-issue').click()
  await expect(drawer.getByTestId('bill-state')).toHaveText('已开具')
  total = ((await drawer.getByTestId('bill-total').textContent()) ?? '').replace(/,/g, '').trim()
  expect(total).toMatch(/^\d+\.\d\d$/)
  // This hub has no payment provider configured: the API says so and the dialog shows it.
  await drawer.getByTestId('pay-online').click()
  const online = page.getByTestId('pay-online-dialog')
  await expect(online.getByRole('alert')).toBeVisible()
  await online.getByRole('button', { name: '关闭', exact: true }).click()
  await page.keyboard.press('Escape')
  await expect(drawer).toBeHidden()
  await result.getByTestId(`run-bill-${e2Bill}`).click()
  await drawer.getByTestId('issue-bill').click()
  await page.getByTestId('confirm-issue').click()
  await expect(drawer.getByTestId('bill-state')).toHaveText('已开具')
  await page.keyboard.press('Escape')
})

test("nova's admin keeps the contacts the park's notices go to", async () => {
  const page = tenantPage
  await logIn(page, tenantAdmin, /\/enterprise$/)
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('Nova Robotics')
  await page.getByTestId('add-contact').click()
  await page.locator('input[name="contact-email-0"]').fill('billing@nova.example')
  await page.getByTestId('save-contacts').click()
  await expect(page.getByTestId('my-contacts').getByRole('status')).toHaveText('已保存')
})

test("finance imports the bank's statement, and the day reconciles", async () => {
  const page = financePage
  await page.getByRole('tab', { name: '银行流水' }).click()
  const csv = [
    '交易日期,交易流水号,对方户名,对方账号,贷方金额,摘要',
    `${today},BK-E2E-001,Nova Robotics,6222020200112233,${total},房租 ${novaBill}`,
    `${today},BK-E2E-002,某贸易公司,6222020200445566,123.45,货款`,
  ].join('\r\n')
  await page.getByTestId('statement-file').setInputFiles({ name: 'statement.csv', mimeType: 'text/csv', buffer: Buffer.from(csv) })
  await expect(page.getByTestId('statement-name')).toHaveText('statement.csv')
  await page.getByTestId('statement-dry-run').click()
  const result = page.getByTestId('statement-result')
  await expect(result).toContainText('试运行 statement.csv')
  await expect(result.getByTestId('statement-matched')).toHaveText('1')
  await expect(result.getByTestId('statement-unmatched')).toHaveText('1')
  await expect(result.getByTestId('statement-lines').locator('tr', { hasText: 'BK-E2E-001' })).toContainText('按摘要中的账单号')
  await expect(page.getByTestId('bank-lines')).not.toContainText('BK-E2E-002')
  await page.getByTestId('statement-import').click()
  await expect(result).toContainText('已导入 statement.csv')
  const waiting = page.getByTestId('bank-lines')
  await expect(waiting.locator('tr', { hasText: 'BK-E2E-002' })).toContainText('未匹配')
  await screenshots(page, 'bank-statement')
  await waiting.getByTestId('ignore-BK-E2E-002').click()
  await page.locator('input[name="ignore-reason"]').fill('非租户款项，已退回')
  await page.getByTestId('confirm-line').click()
  await expect(waiting).not.toContainText('BK-E2E-002')

  await page.getByRole('tab', { name: '账单', exact: true }).click()
  await expect(page.getByTestId('bills-table').locator('tr', { hasText: novaBill })).toContainText('已结清')
  await page.getByRole('tab', { name: '通知发件箱' }).click()
  const notice = page.getByTestId('outbox-table').locator('tr', { hasText: 'billing@nova.example' })
  await expect(notice).toContainText('收款到账')
  await screenshots(page, 'outbox')

  await page.getByRole('menuitem', { name: '财务报表', exact: true }).click()
  await expect(page.getByTestId('balanced')).toHaveText('已平衡')
  await expect(page.getByTestId('received')).toHaveText(`¥${total.replace(/\B(?=(\d{3})+(?!\d))/g, ',')}`)
  await expect(page.getByTestId('by-method')).toContainText('转账')
  await expect(page.getByTestId('differences')).toContainText('没有差异')
  const [recDownload] = await Promise.all([page.waitForEvent('download'), page.getByTestId('export-reconciliation').click()])
  const recCsv = readFileSync((await recDownload.path()) ?? '', 'utf8')
  expect(recCsv).toContain('已平衡,是')
  expect(recCsv).toContain(`当日收款,转账,1,${total}`)
  await screenshots(page, 'reconciliation')
  await page.getByRole('tab', { name: '欠款账龄' }).click()
  const ageing = page.getByTestId('ageing-table')
  await expect(ageing).toContainText('Enterprise e2')
  const [ageDownload] = await Promise.all([page.waitForEvent('download'), page.getByTestId('export-ageing').click()])
  const ageCsv = readFileSync((await ageDownload.path()) ?? '', 'utf8')
  expect(ageCsv.split('\r\n')[0]).toContain('逾期 1–30 天')
  expect(ageCsv).toContain('e2,Enterprise e2,1,')
  await screenshots(page, 'ageing')
})

test("nova's admin sees its own bill and payment only, and asks for an invoice", async () => {
  const page = tenantPage
  await page.reload()
  const bills = page.getByTestId('my-bills')
  await expect(bills.locator('tr', { hasText: novaBill })).toContainText('已结清')
  await expect(bills).not.toContainText(e2Bill)
  await expect(page.getByTestId('my-payments').locator('tr', { hasText: 'BK-E2E-001' })).toContainText('转账')
  await expect(page.getByTestId('my-contracts')).toContainText('k-nova')
  for (const path of [
    '/api/v1/parks/hil/payments',
    '/api/v1/parks/hil/bank-lines',
    '/api/v1/parks/hil/reconciliation',
    '/api/v1/parks/hil/invoice-requests',
    '/api/v1/parks/hil/enterprises/e2/payments',
    '/api/v1/parks/hil/enterprises/e2/invoice-requests',
  ]) {
    const answer = await page.request.get(path)
    expect(answer.status(), path).toBe(403)
  }
  await bills.getByTestId(`ask-invoice-${novaBill}`).click()
  const dialog = page.getByTestId('invoice-dialog')
  await expect(dialog.locator('input[name="invoice-title"]')).toHaveValue('Nova Robotics')
  // A code whose check character is wrong is refused before anything is sent.
  await dialog.locator('input[name="invoice-tax"]').fill(`${taxNumber.slice(0, 17)}0`)
  await dialog.getByTestId('save-invoice').click()
  await expect(dialog.getByRole('alert')).toContainText('校验位')
  await dialog.locator('input[name="invoice-tax"]').fill(taxNumber)
  await dialog.getByTestId('save-invoice').click()
  await expect(dialog).toBeHidden()
  await expect(page.getByTestId('my-invoices').locator('tr', { hasText: novaBill })).toContainText('待开票')
  await screenshots(page, 'tenant')
})

test('finance issues the invoice, and may not approve its own refund', async () => {
  const page = financePage
  await page.goto('/billing')
  await page.getByRole('tab', { name: '开票申请' }).click()
  const row = page.getByTestId('invoices-table').locator('tr', { hasText: novaBill })
  await expect(row).toContainText(taxNumber)
  await row.getByRole('button', { name: '登记开票' }).click()
  await page.locator('input[name="invoice-number"]').fill('04400123')
  await page.getByTestId('confirm-invoice').click()
  await expect(page.getByTestId('invoices-table')).not.toContainText(novaBill)
  await tenantPage.reload()
  const mine = tenantPage.getByTestId('my-invoices').locator('tr', { hasText: novaBill })
  await expect(mine).toContainText('已开票')
  await expect(mine.getByTestId('invoice-number')).toHaveText('04400123')

  await page.getByRole('tab', { name: '收款记录' }).click()
  await page.getByTestId(`refund-${novaBill}-p1`).click()
  await page.locator('input[name="refund-amount"]').fill('100')
  await page.locator('input[name="refund-reason"]').fill('多收物业费')
  await page.getByTestId('save-refund').click()
  const refunds = page.getByTestId('refunds-table')
  const refund = refunds.locator('tr', { hasText: `${novaBill}-p1` })
  await expect(refund).toContainText('待审批')
  await refund.getByRole('button', { name: '批准' }).click()
  await expect(page.getByRole('dialog').getByText('此退款由您申请')).toBeVisible()
  await page.locator('input[name="refund-reference"]').fill('RF-E2E-1')
  await page.getByTestId('confirm-refund').click()
  await expect(page.getByTestId('refund-error')).toContainText('不能审批自己申请的退款')
  await screenshots(page, 'refund-refused')
})
