import { computed, inject, provide, type App, type ComputedRef, type Directive, type InjectionKey, type Ref } from 'vue'

const KEY: InjectionKey<Ref<readonly string[]>> = Symbol('smartpark.permissions')
let appPermissions: Ref<readonly string[]> | null = null

/** Gives the app the permissions of the logged-in user (a ref that follows the session). */
export function installAccess(app: App, permissions: Ref<readonly string[]>): void {
  appPermissions = permissions
  app.provide(KEY, permissions)
  app.directive('can', vCan)
}

/** The same for a subtree (tests, embedded views). */
export function provideAccess(permissions: Ref<readonly string[]>): void {
  provide(KEY, permissions)
}

export function useAccess(): { can: (permission: string) => boolean; permissions: ComputedRef<readonly string[]> } {
  const injected = inject(KEY, null) ?? appPermissions
  const permissions = computed(() => injected?.value ?? [])
  return {
    permissions,
    can: (permission: string) => permissions.value.includes(permission),
  }
}

/**
 * `v-can="'points.write'"`: the element is removed when the user lacks the permission.
 * For controls whose permission can change while the page is open, prefer
 * `v-if="can('points.write')"`, which follows the session.
 */
export const vCan: Directive<HTMLElement, string> = {
  mounted(el, binding) {
    const granted = appPermissions?.value ?? []
    if (!granted.includes(binding.value)) el.remove()
  },
}
