import { reactive, ref } from 'vue'

/**
 * A record's form: `open()` for a new one (the blank) or `open(fields)` to change one,
 * `save()` runs `write` and closes the form when it is done, keeping the API's refusal in it
 * when it is not.
 */
export function useEditor<F extends object>(blank: () => F, write: (fields: F) => Promise<unknown>) {
  const mode = ref<'new' | 'edit' | null>(null)
  const form = reactive(blank())
  const error = ref<unknown>(null)
  return {
    mode,
    form,
    error,
    open(fields?: Partial<F>) {
      mode.value = fields ? 'edit' : 'new'
      Object.assign(form, blank(), fields ?? {})
      error.value = null
    },
    close() {
      mode.value = null
    },
    async save() {
      error.value = null
      try {
        await write(form as F)
        mode.value = null
      } catch (e) {
        error.value = e
      }
    },
  }
}
