import { createRouter, createWebHistory, type RouteRecordRaw } from 'vue-router'

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
    component: () => import('@smartpark/layout').then((m) => m.AccountPage),
    meta: { title: 'account.title' },
  },
  { path: '/:rest(.*)*', component: () => import('@smartpark/layout').then((m) => m.NotFoundPage), meta: { title: 'notFound.title' } },
]

/** The guard (a login, a second factor, the page's permission) is added at the start. */
export const router = createRouter({ history: createWebHistory(), routes })
