import { readFileSync } from 'node:fs'
import { expect, enterpriseAdmin, finance, logIn, manager, pickDate, reviewer, screenshots, test, totp } from './fixtures'

// A lease from draft to paid bill against the real hub (tests/hil/hub_console.rs made the
// spaces b1-101 of 120.50 m² and b1-102, and an active contract k-e2 of enterprise e2 on the
// latter since last month, naming an electricity tariff the park does not have): the park's manager drafts and submits a contract for e1, cannot approve it
// themselves, a second manager approves and activates it; finance runs the month, reads
// the rent line explained, issues the bill and records two payments; e1's admin sees the
// contract and the bill, and nothing of e2's.
test.describe.configure({ mode: 'serial' })

const now = new Date()
const month = `${now.getFullYear()}-${String(now.getMonth() + 1).padStart(2, '0')}`
const start = `${month}-01`
const end = `${now.getFullYear() + 2}-12-31`
const freeTo = `${month}-05`
const e1Bill = `${month.replace('-', '')}-e1-1`
const e2Bill = `${month.replace('-', '')}-e2-1`

test('a park manager drafts and submits a contract, and may not approve it', async ({ page }) => {
  await logIn(page, manager, /\/overview$/)
  await page.getByRole('menuitem', { name: '租赁合同', exact: true }).click()
  await expect(page.getByTestId('contracts-table')).toContainText('k-e2')
  await page.getByTestId('add-contract').click()
  const dialog = page.getByTestId('contract-dialog')
  await dialog.locator('input[name="contract-id"]').fill('k-e2e')
  await dialog.getByTestId('contract-enterprise').click()
  await page.getByRole('option', { name: 'Enterprise e1 (e1)' }).click()
  await dialog.getByTestId('contract-spaces').click()
  await page.getByRole('option', { name: /b1-101/ }).click()
  // The space let by k-e2 cannot be chosen.
  await expect(page.getByRole('option', { name: /b1-102/ })).toHaveClass(/is-disabled/)
  await dialog.locator('input[name="contract-id"]').click()
  await expect(dialog).toContainText('共 120.5 ㎡')
  await pickDate(dialog.locator('input[name="contract-start"]'), start)
  await pickDate(dialog.locator('input[name="contract-end"]'), end)
  // A rent typed with three decimals is refused before anything is sent.
  await dialog.locator('input[name="contract-rent"]').fill('80.125')
  await dialog.getByTestId('save-contract').click()
  await expect(dialog.getByRole('alert')).toContainText('租金应为金额')
  await dialog.locator('input[name="contract-rent"]').fill('80')
  await dialog.locator('input[name="contract-escalation"]').fill('5')
  await dialog.getByTestId('add-free').click()
  await pickDate(dialog.locator('input[name="free-from-0"]'), start)
  await pickDate(dialog.locator('input[name="free-to-0"]'), freeTo)
  await dialog.locator('input[name="contract-property"]').fill('12.5')
  await dialog.locator('input[name="contract-deposit"]').fill('20000')
  await dialog.locator('input[name="contract-late-rate"]').fill('0.05')
  await dialog.getByTestId('save-contract').click()
  await expect(dialog).toBeHidden()

  const drawer = page.getByTestId('contract-drawer')
  await expect(drawer.getByTestId('contract-state')).toHaveText('草稿')
  await expect(drawer.getByTestId('contract-terms')).toContainText('¥80.00/㎡·月')
  await expect(drawer.getByTestId('contract-terms')).toContainText('每年递增 5%')
  await expect(drawer.getByTestId('contract-terms')).toContainText(`${start} 至 ${freeTo}`)
  await expect(drawer.getByTestId('contract-spaces')).toContainText('120.50 ㎡')
  await drawer.getByTestId('act-submit').click()
  await expect(drawer.getByTestId('contract-state')).toHaveText('待审核')
  await expect(drawer).toContainText('此合同由您提交审核')

  // The API refuses the submitter's own approval, and the page says why.
  await drawer.getByTestId('act-approve').click()
  const refused = drawer.getByTestId('act-error')
  await expect(refused).toContainText('不能审核自己提交的合同')
  await expect(refused).toContainText('another user must')
  await expect(drawer.getByTestId('contract-state')).toHaveText('待审核')
  await screenshots(page, 'contract-refused')
})

test('a second park manager approves and activates it', async ({ page }) => {
  await logIn(page, reviewer, /\/overview$/)
  await page.getByRole('menuitem', { name: '租赁合同', exact: true }).click()
  await page.getByTestId('contract-state-filter').click()
  await page.getByRole('option', { name: '待审核' }).click()
  const row = page.getByTestId('contracts-table').locator('tr', { hasText: 'k-e2e' })
  await expect(row).toContainText('待审核')
  // k-e2 is active: the filter leaves it out.
  await expect(page.getByTestId('contracts-table').locator('tr', { hasText: 'Enterprise e2' })).toHaveCount(0)
  await row.getByTestId('open-k-e2e').click()
  const drawer = page.getByTestId('contract-drawer')
  await drawer.getByTestId('act-approve').click()
  await expect(drawer.getByTestId('contract-state')).toHaveText('已审核')
  await drawer.getByTestId('act-activate').click()
  await expect(drawer.getByTestId('contract-state')).toHaveText('生效中')
  const history = drawer.getByTestId('contract-history')
  await expect(history.locator('tr', { hasText: '提交审核' })).toContainText(manager.username)
  await expect(history.locator('tr', { hasText: '审核通过' })).toContainText(reviewer.username)
  await expect(history.locator('tr', { hasText: '生效' }).last()).toContainText(reviewer.username)
  await expect(drawer).toContainText(`审核人: ${reviewer.username}`)
  await screenshots(page, 'contract-active')
})

test('finance runs the month, issues the bill with its rent explained and records its payment', async ({ page }) => {
  // Finance must set up a second factor first: the account page shows the secret, the code
  // comes from it as from an authenticator app.
  await logIn(page, finance, /\/account$/)
  await page.getByRole('button', { name: '开启' }).click()
  const secret = (await page.locator('code.secret').textContent()) ?? ''
  await page.getByLabel('动态验证码').fill(totp(secret))
  await page.getByRole('button', { name: '确认' }).click()
  await expect(page.getByText('已开启')).toBeVisible()

  await page.goto('/billing')
  await expect(page.locator('input[name="run-month"]')).toHaveValue(month)
  await page.getByTestId('run-bills').click()
  const result = page.getByTestId('run-result')
  await expect(result).toContainText(`${month} 出账结果`)
  await expect(result.getByTestId(`run-bill-${e1Bill}`)).toBeVisible()
  await expect(result.getByTestId(`run-bill-${e2Bill}`)).toBeVisible()
  // k-e2's electricity of last month waits: the park has no tariff "power" yet.
  const pending = result.getByTestId('run-pending').locator('tr', { hasText: 'k-e2' })
  await expect(pending).toContainText('电费')
  await expect(pending).toContainText('no tariff power')
  await expect(page.getByTestId('runs-table').locator('tr', { hasText: month }).first()).toContainText(finance.username)
  await expect(page.getByTestId('runs-table').locator('tr', { hasText: month }).first()).toContainText('no tariff power')
  await screenshots(page, 'bill-run')

  // e1's bill: the deposit, and the rent of the month with where it came from.
  await result.getByTestId(`run-bill-${e1Bill}`).click()
  const drawer = page.getByTestId('bill-drawer')
  await expect(drawer.getByTestId('bill-state')).toHaveText('草稿')
  const rent = drawer.getByTestId('why-rent')
  await expect(rent).toContainText('面积 120.50 ㎡ × ¥80.00/㎡·月')
  await expect(rent).toContainText('第 1 年月租 ¥9640.00')
  await expect(rent).toContainText('每年递增 5%')
  await expect(rent).toContainText('其中免租 5 天')
  await expect(drawer.getByTestId('why-deposit')).toContainText('押金 ¥20000.00')
  await expect(drawer.getByTestId('bill-digest')).toHaveText(/^[0-9a-f]{64}$/)
  await drawer.getByTestId('issue-bill').click()
  await page.getByTestId('confirm-issue').click()
  await expect(drawer.getByTestId('bill-state')).toHaveText('已开具')
  await screenshots(page, 'bill')

  // A payment: an amount with three decimals is refused, a part is taken, then the rest.
  await drawer.getByTestId('pay-bill').click()
  const pay = page.getByRole('dialog', { name: `登记收款：${e1Bill}` })
  await pay.locator('input[name="pay-amount"]').fill('1.234')
  await pay.locator('input[name="pay-reference"]').fill('BANK-E2E-1')
  await pay.getByTestId('save-payment').click()
  await expect(pay.getByRole('alert')).toContainText('最多两位小数')
  await pay.locator('input[name="pay-amount"]').fill('1000.5')
  await pay.getByTestId('save-payment').click()
  await expect(pay).toBeHidden()
  await expect(drawer.getByTestId('bill-state')).toHaveText('部分付款')
  await expect(drawer.getByTestId('bill-paid')).toHaveText('1,000.50')
  await drawer.getByTestId('pay-bill').click()
  await pay.locator('input[name="pay-reference"]').fill('BANK-E2E-2')
  await pay.getByTestId('save-payment').click()
  await expect(pay).toBeHidden()
  await expect(drawer.getByTestId('bill-state')).toHaveText('已结清')
  await expect(drawer.getByTestId('bill-balance')).toHaveText('0.00')
  await expect(drawer.getByTestId('bill-payments')).toContainText('BANK-E2E-2')
  await expect(drawer.getByTestId('bill-payments')).toContainText('1,000.50')
  await screenshots(page, 'bill-paid')

  // The bill as a printable page, saved as PDF.
  await drawer.getByTestId('print-bill').click()
  await expect(page.getByTestId('bill-print')).toContainText(e1Bill)
  await expect(page.getByTestId('print-summary')).toContainText('未收 ¥0.00')
  await screenshots(page, 'bill-print')
  const pdf = test.info().outputPath(`bill-${e1Bill}.pdf`)
  await page.pdf({ path: pdf, format: 'A4', printBackground: true })
  const bytes = readFileSync(pdf)
  expect(bytes.subarray(0, 5).toString()).toBe('%PDF-')
  expect(bytes.length).toBeGreaterThan(10_000)

  // The month's bills as CSV, from the API's data; e2's bill issued too.
  await page.goto('/billing')
  await page.getByRole('tab', { name: '账单', exact: true }).click()
  await expect(page.getByTestId('bills-table')).toContainText(e2Bill)
  const [download] = await Promise.all([page.waitForEvent('download'), page.getByTestId('export-bills').click()])
  const csv = readFileSync((await download.path()) ?? '', 'utf8')
  expect(csv.split('\r\n')[0]).toContain('账单号')
  expect(csv).toContain(`${e1Bill},Enterprise e1 (e1),${month},已结清`)
  expect(csv).toContain(e2Bill)
  await page.getByTestId('bills-table').locator('tr', { hasText: e2Bill }).getByTestId(`open-${e2Bill}`).click()
  await page.getByTestId('bill-drawer').getByTestId('issue-bill').click()
  await page.getByTestId('confirm-issue').click()
  await expect(page.getByTestId('bill-drawer').getByTestId('bill-state')).toHaveText('已开具')
  await page.keyboard.press('Escape')
  await expect(page.getByTestId('bill-drawer')).toBeHidden()
  await page.getByRole('tab', { name: '收款记录' }).click()
  await expect(page.getByTestId('payments-table')).toContainText('BANK-E2E-1')
  await screenshots(page, 'bills')
})

test("the enterprise's admin sees its own contract and bill and nobody else's", async ({ page }) => {
  await logIn(page, enterpriseAdmin, /\/enterprise$/)
  const contracts = page.getByTestId('my-contracts')
  await expect(contracts).toContainText('k-e2e')
  await expect(contracts).toContainText('生效中')
  await expect(contracts).not.toContainText('b1-102')
  const bills = page.getByTestId('my-bills')
  const mine = bills.locator('tr', { hasText: e1Bill })
  await expect(mine).toContainText('已结清')
  await expect(bills).not.toContainText(e2Bill)
  await mine.locator('.el-table__expand-icon').click()
  await expect(bills.getByTestId('why-rent')).toContainText('面积 120.50 ㎡ × ¥80.00/㎡·月')
  await expect(page.getByRole('menuitem', { name: '账单与收款', exact: true })).toHaveCount(0)
  await expect(page.getByRole('menuitem', { name: '租赁合同', exact: true })).toHaveCount(0)
  for (const path of [
    '/api/v1/parks/hil/contracts',
    '/api/v1/parks/hil/bills',
    '/api/v1/parks/hil/payments',
    '/api/v1/parks/hil/enterprises/e2/contracts',
    '/api/v1/parks/hil/enterprises/e2/bills',
  ]) {
    const answer = await page.request.get(path)
    expect(answer.status(), path).toBe(403)
  }
  await screenshots(page, 'enterprise-billing')
  // Its bill as a printable page, from its own bills.
  await bills.getByTestId(`print-${e1Bill}`).click()
  await expect(page.getByTestId('print-summary')).toContainText('已收')
  await expect(page.getByTestId('bill-print')).toContainText(e1Bill)
})
