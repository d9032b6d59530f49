import { computed, ref, watch } from 'vue'
import { debounced } from '@smartpark/layout'

/** A searched, paged list: the search box, the page and its size, as the API's arguments. */
export function useList(size = 50) {
  const search = ref('')
  const settled = debounced(search, 250)
  const page = ref(1)
  const limit = ref(size)
  watch(settled, () => (page.value = 1))
  const args = computed(() => ({ q: settled.value.trim(), offset: (page.value - 1) * limit.value, limit: limit.value }))
  return { search, page, limit, args }
}
