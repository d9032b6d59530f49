import { engineer, expect, logIn, screenshots, test, viewer } from './fixtures'

test('the login page works by keyboard, in Chinese, and refuses a wrong password with the API message', async ({ page }) => {
  await page.goto('/')
  await expect(page).toHaveURL(/\/login/)
  await expect(page.getByRole('button', { name: '登录' })).toBeVisible()
  await screenshots(page, 'login')
  await page.getByLabel('用户名').fill(engineer.username)
  await page.getByLabel('密码').fill('not-the-password')
  await page.getByLabel('密码').press('Enter')
  await expect(page.getByRole('alert')).toContainText('追踪号')
  await logIn(page, engineer)
})

test('the overview shows the building: devices online, alarms by severity, the store and the hub', async ({ page }) => {
  await logIn(page, engineer)
  await expect(page.getByTestId('devices-online')).toContainText('1 / 1')
  await expect(page.getByTestId('alarms-P2')).toContainText('1')
  await expect(page.getByTestId('store')).toContainText('%')
  await expect(page.getByTestId('hub')).toContainText('未配置')
  await expect(page.getByRole('cell', { name: 'dev', exact: true })).toBeVisible()
  await screenshots(page, 'overview')
})

test('a live value changes on the points page without a reload', async ({ page }) => {
  await logIn(page, engineer)
  await page.getByRole('menuitem', { name: '设备与点位' }).click()
  await page.getByLabel('搜索').fill('uptime')
  const cell = page.getByTestId('value-dev/uptime')
  await expect(cell).toHaveText(/\d+/)
  const first = await cell.textContent()
  await expect(cell).not.toHaveText(first ?? '', { timeout: 20_000 })
  await screenshots(page, 'points')
})

test('an engineer writes a setpoint, confirms it by name with old and new value, and sees it read back', async ({ page }) => {
  await logIn(page, engineer)
  await page.goto('/points/dev/setpoint')
  await expect(page.getByTestId('point-value')).toHaveText(/\d/)
  const old = (await page.getByTestId('point-value').textContent())?.trim() ?? ''
  const next = old === '21.5' ? '22' : '21.5'
  const input = page.getByTestId('write-form').getByRole('spinbutton')
  await input.fill(next)
  await input.press('Tab')
  await page.getByRole('button', { name: '写入…' }).click()
  const dialog = page.getByRole('dialog')
  await expect(dialog).toContainText(`将 dev/setpoint 从 ${old} 改为 ${next}`)
  await dialog.getByRole('button', { name: '确认' }).click()
  await expect(page.getByTestId('read-back')).toContainText(next)
  await expect(page.getByTestId('point-value')).toHaveText(next)
  await screenshots(page, 'point')
})

test('an engineer acknowledges an alarm with a comment, comments on it, and finds the act in the audit log', async ({ page }) => {
  await logIn(page, engineer)
  await page.getByRole('menuitem', { name: /告警/ }).click()
  await page.getByTestId('alarm-mode-set').click()
  const drawer = page.getByRole('dialog')
  await expect(drawer.getByTestId('alarm-state')).toHaveText('活动未确认')
  await drawer.getByRole('textbox', { name: '确认说明（可选）' }).fill('checked the controller')
  await drawer.getByRole('button', { name: '确认', exact: true }).click()
  await expect(drawer.getByTestId('alarm-state')).toHaveText('活动已确认')
  await drawer.getByRole('textbox', { name: '备注', exact: true }).fill('mode set by the BMS on purpose')
  await drawer.getByRole('button', { name: '添加备注' }).click()
  await expect(drawer.getByText('mode set by the BMS on purpose')).toBeVisible()
  await screenshots(page, 'alarms')
  const actions = await page.evaluate(async () => {
    const audit = await (await fetch('/api/v1/audit?limit=50')).json()
    return (audit.entries as { action: string }[]).map((e) => e.action)
  })
  expect(actions).toContain('alarm_acknowledge')
  expect(actions).toContain('alarm_comment')
})

test('a door opened by hand with a reason shows in the access log and the audit log', async ({ page }) => {
  await logIn(page, engineer)
  await page.getByRole('menuitem', { name: '门禁' }).click()
  await page.getByTestId('open-d1').click()
  const dialog = page.getByRole('dialog')
  await dialog.getByRole('textbox').fill('delivery at the loading bay')
  await page.getByTestId('confirm-open').click()
  await expect(dialog).toBeHidden()
  await expect(page.getByTestId('access-log')).toContainText('access.manual_open')
  await expect(page.getByTestId('access-log')).toContainText('delivery at the loading bay')
  await screenshots(page, 'doors')
  const audit = await page.evaluate(async () => {
    const a = await (await fetch('/api/v1/audit?limit=50')).json()
    return (a.entries as { action: string; target: string }[]).map((e) => `${e.action} ${e.target}`)
  })
  expect(audit).toContain('door_manual_open d1')
})

test('a low-confidence plate is admitted with the plate a person read', async ({ page }) => {
  await logIn(page, engineer)
  await page.getByRole('menuitem', { name: '停车场' }).click()
  const review = page.getByTestId('review-table')
  await expect(review).toContainText('湘A12345')
  await expect(review).toContainText('41%')
  await expect(review).toContainText('snap/1.jpg')
  await review.getByRole('textbox', { name: '更正车牌' }).fill('湘A12346')
  await review.getByRole('button', { name: '放行' }).click()
  await expect(review).toContainText('没有待确认的车牌')
  await expect(page.getByTestId('sessions-table')).toContainText('湘A12346')
  await screenshots(page, 'parking')
})

test('the rules page shows the loaded rule and reloads the file', async ({ page }) => {
  await logIn(page, engineer)
  await page.getByRole('menuitem', { name: '规则' }).click()
  await expect(page.getByTestId('rules-table')).toContainText('mode-set')
  await page.getByRole('button', { name: '重新加载规则文件' }).click()
  await expect(page.getByText('已加载 1 条规则')).toBeVisible()
  await screenshots(page, 'rules')
})

test('the logs page pages the event and audit logs and exports them as CSV', async ({ page }) => {
  await logIn(page, engineer)
  await page.getByRole('menuitem', { name: '日志' }).click()
  await expect(page.getByTestId('events-table')).toContainText('access.manual_open')
  const [events] = await Promise.all([page.waitForEvent('download'), page.getByTestId('export-events').click()])
  const csv = await (await events.createReadStream()).toArray()
  const text = Buffer.concat(csv).toString('utf8')
  expect(text.split('\n')[0]).toBe('seq,time_utc,kind,subject,body')
  expect(text).toContain('access.manual_open')
  await page.getByRole('tab', { name: '审计日志' }).click()
  await expect(page.getByTestId('audit-table')).toContainText('door_manual_open')
  const [audit] = await Promise.all([page.waitForEvent('download'), page.getByTestId('export-audit').click()])
  const auditText = Buffer.concat(await (await audit.createReadStream()).toArray()).toString('utf8')
  expect(auditText).toContain('door_manual_open')
  await screenshots(page, 'logs')
})

test('the users page lists who may log in here, and is not offered to a role without users.manage', async ({ page }) => {
  await logIn(page, engineer)
  await page.getByRole('menuitem', { name: '用户' }).click()
  await expect(page.getByTestId('users-table')).toContainText(engineer.username)
  await expect(page.getByTestId('users-table')).toContainText(viewer.username)
  await screenshots(page, 'users')
  await logIn(page, viewer)
  await expect(page.getByRole('menuitem', { name: '用户' })).toHaveCount(0)
  const status = await page.evaluate(async () => (await fetch('/api/v1/users')).status)
  expect(status).toBe(403)
})

test('the console switches to English and back, and the choice is kept', async ({ page }) => {
  await logIn(page, engineer)
  // By keyboard: focus the language box, open it, pick.
  await page.getByRole('combobox', { name: '语言' }).focus()
  await page.keyboard.press('Enter')
  await page.getByRole('option', { name: 'English' }).click()
  await expect(page.getByRole('menuitem', { name: 'Devices and points' })).toBeVisible()
  await expect(page.getByTestId('devices-online')).toContainText('Devices online')
  await page.reload()
  await expect(page.getByRole('menuitem', { name: 'Overview' })).toBeVisible()
  await screenshots(page, 'overview-en')
  await page.getByRole('combobox', { name: 'Language' }).focus()
  await page.keyboard.press('Enter')
  await page.getByRole('option', { name: '中文' }).click()
  await expect(page.getByRole('menuitem', { name: '总览' })).toBeVisible()
})

test('a role that may not write points sees no write control, and the API refuses it anyway', async ({ page }) => {
  await logIn(page, viewer)
  await page.goto('/points/dev/setpoint')
  await expect(page.getByTestId('point-value')).toHaveText(/\d/)
  await expect(page.getByTestId('write-form')).toHaveCount(0)
  const status = await page.evaluate(async () => {
    const me = await (await fetch('/api/v1/auth/me')).json()
    const r = await fetch('/api/v1/points/dev/setpoint/write', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': me.csrfToken },
      body: JSON.stringify({ value: 23 }),
    })
    return r.status
  })
  expect(status).toBe(403)
  await screenshots(page, 'point-viewer')
})

test('the account page shows who is logged in and logging out ends the session', async ({ page }) => {
  await logIn(page, engineer)
  await page.getByTestId('user-menu').click()
  await page.getByRole('menuitem', { name: '我的账号' }).click()
  await expect(page.getByText('points.write')).toBeVisible()
  await screenshots(page, 'account')
  await page.getByTestId('user-menu').click()
  await page.getByRole('menuitem', { name: '退出登录' }).click()
  await expect(page).toHaveURL(/\/login/)
  const status = await page.evaluate(async () => (await fetch('/api/v1/auth/me')).status)
  expect(status).toBe(401)
})
