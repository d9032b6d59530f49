import { useSessionStore } from '@smartpark/api'
import { createRouter, createWebHistory, type RouteRecordRaw } from 'vue-router'

declare module 'vue-router' {
  interface RouteMeta {
    /** Shown without a login. */
    public?: boolean
    /** The permission the page needs (the API checks it again on every request). */
    permission?: string
    /** i18n key of the page's title. */
    title?: string
  }
}

const page = (permission: string | undefined, title: string) => ({ permission, title })

const routes: RouteRecordRaw[] = [
  { path: '/login', component: () => import('@/views/LoginView.vue'), meta: { public: true, title: 'login.title' } },
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
  { path: '/import', component: () => import('@/views/ImportView.vue'), meta: page('telemetry.read', 'nav.import') },
  { path: '/users', component: () => import('@/views/UsersView.vue'), meta: page('users.manage', 'nav.users') },
  { path: '/audit', component: () => import('@/views/AuditView.vue'), meta: page('audit.read', 'nav.audit') },
  { path: '/enterprise', component: () => import('@/views/EnterpriseView.vue'), meta: page('enterprise.read', 'nav.myEnterprise') },
  { path: '/account', component: () => import('@/views/AccountView.vue'), meta: { title: 'account.title' } },
  { path: '/:rest(.*)*', component: () => import('@/views/NotFoundView.vue'), meta: { title: 'notFound.title' } },
]

export const router = createRouter({ history: createWebHistory(), routes })

router.beforeEach(async (to) => {
  const session = useSessionStore()
  if (!session.checked) await session.restore()
  if (to.meta.public) return true
  if (!session.loggedIn) return { path: '/login', query: { next: to.fullPath } }
  if (session.needsSecondFactor && to.path !== '/account') return '/account'
  if (to.meta.permission && !session.permissions.includes(to.meta.permission)) return '/account'
  return true
})
