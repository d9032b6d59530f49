import { useSessionStore } from '@smartpark/api'
import { createRouter, createWebHistory, type RouteRecordRaw } from 'vue-router'


const page = (permission: string | readonly string[] | undefined, title: string) => ({ permission, title })

const routes: RouteRecordRaw[] = [
  { path: '/login', component: () => import('@smartpark/layout').then((m) => m.LoginPage), meta: { public: true, title: 'login.title' } },
  {
    path: '/',
    redirect: () => {
      const session = useSessionStore()
      return session.permissions.includes('telemetry.read') ? '/overview' : '/enterprise'
    },
  },
  { path: '/overview', component: () => import('@/views/OverviewView.vue'), meta: page('telemetry.read', 'nav.overview') },
  {
    path: '/buildings/:park/:building',
    component: () => import('@/views/BuildingView.vue'),
    meta: page('telemetry.read', 'nav.overview'),
  },
  { path: '/enterprises', component: () => import('@/views/EnterprisesView.vue'), meta: page('telemetry.read', 'nav.enterprises') },
  { path: '/people', component: () => import('@/views/PeopleView.vue'), meta: page('telemetry.read', 'nav.people') },
  { path: '/credentials', component: () => import('@/views/CredentialsView.vue'), meta: page('credentials.edit', 'nav.credentials') },
  { path: '/access-groups', component: () => import('@/views/AccessGroupsView.vue'), meta: page('telemetry.read', 'nav.groups') },
  { path: '/spaces', component: () => import('@/views/SpacesView.vue'), meta: page('telemetry.read', 'nav.spaces') },
  { path: '/space-map', component: () => import('@/views/SpaceMapView.vue'), meta: page('telemetry.read', 'nav.spaceMap') },
  { path: '/leads', component: () => import('@/views/LeadsView.vue'), meta: page('leasing.manage', 'nav.leads') },
  { path: '/car-parks', component: () => import('@/views/CarParksView.vue'), meta: page('telemetry.read', 'nav.carparks') },
  { path: '/import', component: () => import('@/views/ImportView.vue'), meta: page('telemetry.read', 'nav.import') },
  {
    path: '/contracts',
    component: () => import('@/views/ContractsView.vue'),
    meta: page(['leasing.manage', 'billing.manage'], 'nav.contracts'),
  },
  { path: '/billing', component: () => import('@/views/BillingView.vue'), meta: page('billing.manage', 'nav.billing') },
  { path: '/reports', component: () => import('@/views/ReportsView.vue'), meta: page('billing.manage', 'nav.reports') },
  {
    path: '/bills/:bill/print',
    component: () => import('@/views/BillPrintView.vue'),
    meta: page(['billing.manage', 'enterprise.read'], 'billing.print'),
  },
  { path: '/users', component: () => import('@/views/UsersView.vue'), meta: page('users.manage', 'nav.users') },
  { path: '/audit', component: () => import('@/views/AuditView.vue'), meta: page('audit.read', 'nav.audit') },
  { path: '/enterprise', component: () => import('@/views/EnterpriseView.vue'), meta: page('enterprise.read', 'nav.myEnterprise') },
  { path: '/account', component: () => import('@smartpark/layout').then((m) => m.AccountPage), meta: { title: 'account.title' } },
  { path: '/:rest(.*)*', component: () => import('@smartpark/layout').then((m) => m.NotFoundPage), meta: { title: 'notFound.title' } },
]

/** The guard (a login, a second factor, the page's permission) is added at the start. */
export const router = createRouter({ history: createWebHistory(), routes })
