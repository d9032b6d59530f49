export { default as AppShell } from './AppShell.vue'
export { default as ErrorNotice } from './ErrorNotice.vue'
export { default as StatusDot } from './StatusDot.vue'
export type { NavItem, LinkState } from './types'
