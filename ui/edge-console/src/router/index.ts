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

const routes: RouteRecordRaw[] = [
  { path: '/login', component: () => import('@/views/LoginView.vue'), meta: { public: true, title: 'login.title' } },
  { path: '/', redirect: '/overview' },
  {
    path: '/overview',
    component: () => import('@/views/OverviewView.vue'),
    meta: { permission: 'telemetry.read', title: 'nav.overview' },
  },
  {
    path: '/points',
    component: () => import('@/views/PointsView.vue'),
    meta: { permission: 'telemetry.read', title: 'nav.points' },
  },
  {
    path: '/points/:device/:point',
    component: () => import('@/views/PointView.vue'),
    meta: { permission: 'telemetry.read', title: 'nav.points' },
  },
  {
    path: '/alarms',
    component: () => import('@/views/AlarmsView.vue'),
    meta: { permission: 'telemetry.read', title: 'nav.alarms' },
  },
  {
    path: '/doors',
    component: () => import('@/views/DoorsView.vue'),
    meta: { permission: 'telemetry.read', title: 'nav.doors' },
  },
  {
    path: '/people',
    component: () => import('@/views/PeopleView.vue'),
    meta: { permission: 'credentials.edit', title: 'nav.people' },
  },
  {
    path: '/parking',
    component: () => import('@/views/ParkingView.vue'),
    meta: { permission: 'telemetry.read', title: 'nav.parking' },
  },
  {
    path: '/rules',
    component: () => import('@/views/RulesView.vue'),
    meta: { permission: 'telemetry.read', title: 'nav.rules' },
  },
  {
    path: '/logs',
    component: () => import('@/views/LogsView.vue'),
    meta: { title: 'nav.logs' },
  },
  {
    path: '/users',
    component: () => import('@/views/UsersView.vue'),
    meta: { permission: 'users.manage', title: 'nav.users' },
  },
  {
    path: '/account',
    component: () => import('@/views/AccountView.vue'),
    meta: { title: 'account.title' },
  },
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
