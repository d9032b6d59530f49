// Where the user works: the park the pages show (one of the parks they may read, picked
// in the header when there are several) and the enterprises their grants name.
import { computed, ref, watch } from 'vue'
import { useSessionStore } from '@smartpark/api'
import { useParks } from '@/api/hub'
import { enterprisesOf } from './grants'

const current = ref('')

export function useScope() {
  const session = useSessionStore()
  const canReadParks = computed(() => session.loggedIn && session.permissions.includes('telemetry.read'))
  const parks = useParks(canReadParks)
  const parkIds = computed(() => (parks.data.value?.parks ?? []).map((p) => p.park))
  const enterprises = computed(() => enterprisesOf(session.me?.grants ?? []))
  watch(
    [parkIds, enterprises],
    ([ids, ents]) => {
      const all = [...ids, ...ents.map((e) => e.park)]
      if (!all.includes(current.value)) current.value = all[0] ?? ''
    },
    { immediate: true },
  )
  return { park: current, parkIds, parks, enterprises }
}
