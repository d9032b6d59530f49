import { expect, enterpriseAdmin, logIn, manager, presentCard, screenshots, test } from './fixtures'

test('the park manager adds an enterprise, a person and a card, and the card opens the door at the edge', async ({ page }) => {
  await logIn(page, manager, /\/overview$/)
  // Every building with its edge: b1's is connected.
  const b1 = page.getByTestId('buildings-table').locator('tr', { hasText: 'b1' })
  await expect(b1).toContainText('已连接')
  await expect(page.getByTestId('edges-connected')).toHaveText('1 / 1')
  await screenshots(page, 'overview')

  // An enterprise: a bad id is refused with the field named, a good one is made.
  await page.getByRole('menuitem', { name: '企业', exact: true }).click()
  await expect(page.getByTestId('enterprises-table')).toContainText('Enterprise e1')
  await page.getByTestId('add-enterprise').click()
  const dialog = page.getByRole('dialog')
  await dialog.locator('input[name="id"]').fill('bad id!')
  await dialog.locator('input[name="name"]').fill('物业服务公司')
  await dialog.getByText('园区运营方').click()
  await dialog.getByRole('button', { name: '保存' }).click()
  await expect(dialog).toContainText('id')
  await dialog.locator('input[name="id"]').fill('e2e-services')
  await dialog.getByRole('button', { name: '保存' }).click()
  await expect(dialog).toBeHidden()
  const row = page.getByTestId('enterprises-table').locator('tr', { hasText: 'e2e-services' })
  await expect(row).toContainText('物业服务公司')
  await expect(row).toContainText(manager.username)
  await screenshots(page, 'enterprises')

  // A person of it in the lobby's group.
  await page.getByRole('menuitem', { name: '人员', exact: true }).click()
  await page.getByTestId('add-person').click()
  await dialog.locator('input[name="id"]').fill('p-e2e')
  await dialog.locator('input[name="name"]').fill('测试员')
  await dialog.getByTestId('person-enterprise').click()
  await page.getByRole('option', { name: '物业服务公司' }).click()
  await dialog.getByTestId('person-groups').click()
  await page.getByRole('option', { name: 'Lobby' }).click()
  await dialog.locator('input[name="name"]').click()
  await dialog.getByRole('button', { name: '保存' }).click()
  await expect(dialog).toBeHidden()
  const person = page.getByTestId('people-table').locator('tr', { hasText: 'p-e2e' })
  await expect(person).toContainText('物业服务公司')
  await expect(person).toContainText('Lobby')

  // A card: its value is sent once and shown nowhere after.
  await person.getByTestId('issue-p-e2e').click()
  await page.locator('input[name="credential-id"]').fill('c-e2e')
  await page.locator('input[name="credential-value"]').fill('CARD-E2E-1')
  await page.getByRole('dialog', { name: '发卡' }).getByRole('button', { name: '保存' }).click()
  await expect(page.getByRole('dialog', { name: '发卡' })).toBeHidden()
  await screenshots(page, 'people')
  await page.getByRole('menuitem', { name: '凭证', exact: true }).click()
  await page.getByRole('textbox', { name: '搜索' }).fill('c-e2e')
  const card = page.getByTestId('credentials-table').locator('tr', { hasText: 'c-e2e' })
  await expect(card).toContainText('••••')
  await expect(card).toContainText('有效')
  await expect(page.locator('body')).not.toContainText('CARD-E2E-1')

  // The card at the edge's door: the edge decides once it has synced the directory, and its
  // decision comes back to the hub with the building's events.
  await page.goto('/buildings/hil/b1')
  await page.getByRole('tab', { name: '事件' }).click()
  const granted = page
    .getByTestId('events-table')
    .locator('tr', { hasText: '"credential":"c-e2e"' })
    .filter({ hasText: '"granted":true' })
  await expect(async () => {
    presentCard('d1', 'CARD-E2E-1')
    await expect(granted.first()).toBeVisible({ timeout: 3_000 })
  }).toPass({ timeout: 60_000 })
  await expect(granted.first()).toContainText('access.decision')
  await screenshots(page, 'building')

  // Suspend it with a reason; the act is in the hub's audit log.
  await page.getByRole('menuitem', { name: '凭证', exact: true }).click()
  await page.getByRole('textbox', { name: '搜索' }).fill('c-e2e')
  await page.getByTestId('suspend-c-e2e').click()
  await page.getByRole('dialog').getByRole('textbox').fill('测试卡回收')
  await page.getByTestId('confirm-status').click()
  await expect(page.getByTestId('credentials-table').locator('tr', { hasText: 'c-e2e' })).toContainText('已挂起')
  await page.getByRole('menuitem', { name: '审计日志', exact: true }).click()
  await expect(page.getByTestId('audit-table').locator('tr', { hasText: 'credential_status' }).first()).toContainText('测试卡回收')
  await screenshots(page, 'audit')
})

test('an import with a bad row is checked, reported by line and column, and cannot be applied', async ({ page }) => {
  await logIn(page, manager, /\/overview$/)
  await page.getByRole('menuitem', { name: '导入与导出', exact: true }).click()
  await page.getByTestId('import-file').setInputFiles({
    name: 'enterprises.csv',
    mimeType: 'text/csv',
    buffer: Buffer.from('id,name,status,kind\nimp-1,导入企业一,active,tenant\nimp-2,导入企业二,sleeping,tenant\n'),
  })
  await page.getByTestId('dry-run').click()
  const report = page.getByTestId('import-report')
  await expect(report).toContainText('错误 1')
  await expect(page.getByTestId('import-errors').locator('tr', { hasText: 'status' })).toContainText('3')
  await expect(page.getByTestId('apply-import')).toBeDisabled()
  await screenshots(page, 'import')
  // Nothing was made.
  await page.getByRole('menuitem', { name: '企业', exact: true }).click()
  await page.getByRole('textbox', { name: '搜索' }).fill('imp-')
  await expect(page.getByTestId('enterprises-table')).toContainText('暂无数据')

  // The same from a workbook (the test made it with an XLSX writer): checked, then imported.
  await page.getByRole('menuitem', { name: '导入与导出', exact: true }).click()
  await page.getByTestId('import-file').setInputFiles(process.env.SMARTPARK_XLSX ?? '')
  await page.getByTestId('dry-run').click()
  await expect(page.getByTestId('import-report')).toContainText('2 行：新增 2，更新 0，错误 0')
  await page.getByTestId('apply-import').click()
  await expect(page.getByTestId('import-report')).toContainText('已导入')
  await page.getByRole('menuitem', { name: '企业', exact: true }).click()
  await page.getByRole('textbox', { name: '搜索' }).fill('200')
  await expect(page.getByTestId('enterprises-table').locator('tr', { hasText: '2001' })).toContainText('表格导入一')

  // A user for the enterprise, with a grant the manager may give; one they may not give is
  // refused with the reason.
  await page.getByRole('menuitem', { name: '用户与角色', exact: true }).click()
  await page.getByTestId('add-user').click()
  const dialog = page.getByRole('dialog', { name: '新增用户' })
  await dialog.locator('input[name="new-username"]').fill('e1-staff')
  await dialog.getByRole('textbox').nth(1).fill('E1 员工')
  await dialog.locator('input[type="password"]').fill('violet-harbor-stone-93')
  await dialog.locator('textarea').fill('operator_admin@operator')
  await dialog.getByRole('button', { name: '保存' }).click()
  await expect(dialog.getByRole('alert')).toBeVisible()
  await dialog.locator('textarea').fill('enterprise_user@enterprise:hil/e1')
  await dialog.getByRole('button', { name: '保存' }).click()
  await expect(dialog).toBeHidden()
  await expect(page.getByTestId('users-table').locator('tr', { hasText: 'e1-staff' })).toContainText('enterprise_user@enterprise:hil/e1')
  await screenshots(page, 'users')

  // A space, and a schedule whose badly typed day is named before anything is sent.
  await page.getByRole('menuitem', { name: '空间与时间表', exact: true }).click()
  await page.getByTestId('add-space').click()
  const space = page.getByRole('dialog', { name: '空间' })
  await space.locator('input[name="space-id"]').fill('b1-f3-301')
  await space.locator('input[name="space-name"]').fill('301 室')
  await space.getByTestId('space-building').click()
  await page.getByRole('option', { name: 'b1', exact: true }).click()
  await space.getByRole('spinbutton', { name: '面积（㎡）' }).fill('128.5')
  await space.getByRole('button', { name: '保存' }).click()
  await expect(space).toBeHidden()
  await expect(page.getByTestId('spaces-table').locator('tr', { hasText: 'b1-f3-301' })).toContainText('128.50')
  await page.getByRole('tab', { name: '时间表' }).click()
  await page.getByTestId('add-schedule').click()
  const schedule = page.getByRole('dialog', { name: '时间表' })
  await schedule.locator('input[name="schedule-id"]').fill('office-hours')
  await schedule.locator('input[name="schedule-name"]').fill('办公时间')
  await schedule.locator('input[name="day-5"]').fill('9点到12点')
  await schedule.getByRole('button', { name: '保存' }).click()
  await expect(schedule.getByRole('alert')).toContainText('周六')
  await schedule.locator('input[name="day-5"]').fill('09:00-12:00')
  await schedule.getByRole('button', { name: '保存' }).click()
  await expect(schedule).toBeHidden()
  await expect(page.getByTestId('schedules-table').locator('tr', { hasText: 'office-hours' })).toContainText('09:00-12:00')
  await screenshots(page, 'spaces')

  // A tariff typed in yuan, kept in fen, and a car park switched to it.
  await page.getByRole('menuitem', { name: '停车场', exact: true }).click()
  await page.getByTestId('add-tariff').click()
  const tariff = page.getByRole('dialog', { name: '收费标准' })
  await tariff.locator('input[name="tariff-id"]').fill('e2e-rate')
  await tariff.locator('input[name="period"]').fill('30')
  await tariff.locator('input[name="day"]').fill('6.5')
  await tariff.locator('input[name="night"]').fill('3')
  await tariff.locator('input[name="lost"]').fill('x')
  await tariff.getByRole('button', { name: '保存' }).click()
  await expect(tariff.getByRole('alert')).toContainText('无入场记录收费')
  await tariff.locator('input[name="lost"]').fill('80')
  await tariff.getByRole('button', { name: '保存' }).click()
  await expect(tariff).toBeHidden()
  await expect(page.getByTestId('tariffs-table').locator('tr', { hasText: 'e2e-rate' })).toContainText('¥6.50')
  await page.getByRole('tab', { name: '停车场' }).click()
  await page.getByTestId('edit-lot-lot-a').click()
  await page.getByTestId('lot-tariff').click()
  await page.getByRole('option', { name: 'e2e-rate' }).click()
  await page.getByRole('dialog', { name: '停车场' }).getByRole('button', { name: '保存' }).click()
  await expect(page.getByRole('dialog', { name: '停车场' })).toBeHidden()
  await expect(page.getByTestId('lots-table').locator('tr', { hasText: 'lot-a' })).toContainText('e2e-rate')
  await screenshots(page, 'car-parks')
})

test('the enterprise admin sees only their own enterprise', async ({ page }) => {
  await logIn(page, enterpriseAdmin, /\/enterprise$/)
  await expect(page.getByTestId('enterprise-info')).toContainText('e1')
  await expect(page.getByTestId('my-people')).toContainText('p1')
  await expect(page.getByTestId('my-people')).not.toContainText('p2')
  await expect(page.getByTestId('my-credentials')).toContainText('c-p1')
  await expect(page.getByTestId('my-credentials')).not.toContainText('c-p2')
  await expect(page.getByTestId('my-passes')).toBeVisible()
  // No park-wide page is offered, and the API refuses them anyway.
  await expect(page.getByRole('menuitem', { name: '本企业', exact: true })).toBeVisible()
  await expect(page.getByRole('menuitem', { name: '企业', exact: true })).toHaveCount(0)
  await expect(page.getByRole('menuitem', { name: '园区总览', exact: true })).toHaveCount(0)
  for (const path of [
    '/api/v1/parks/hil/people',
    '/api/v1/parks/hil/passes',
    '/api/v1/parks/hil/enterprises/e2/people',
    '/api/v1/parks/hil/enterprises/e2/credentials',
    '/api/v1/parks/hil/enterprises/e2/passes',
  ]) {
    const answer = await page.request.get(path)
    expect(answer.status(), path).toBe(403)
  }
  await screenshots(page, 'enterprise')
})
