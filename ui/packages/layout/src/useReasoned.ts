import { ref, type Ref } from 'vue'

/**
 * An audited act that asks why first (with `ReasonDialog`): `ask(target)` opens the
 * dialog, `confirm()` runs `act` with the target and the trimmed reason, closing the
 * dialog when it succeeds and keeping the error in it when it does not.
 */
export function useReasoned<T extends object>(act: (args: T & { reason: string }) => Promise<unknown>) {
  const target = ref<T | null>(null) as Ref<T | null>
  const reason = ref('')
  const error = ref<unknown>(null)
  return {
    target,
    reason,
    error,
    ask(next: T) {
      target.value = next
      reason.value = ''
      error.value = null
    },
    close() {
      target.value = null
    },
    async confirm() {
      const t = target.value
      if (!t || !reason.value.trim()) return
      error.value = null
      try {
        await act({ ...t, reason: reason.value.trim() })
        target.value = null
      } catch (e) {
        error.value = e
      }
    },
  }
}
