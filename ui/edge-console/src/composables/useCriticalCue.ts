import { ref, watch, type Ref } from 'vue'
import type { Alarm } from '@/api/types'

const muted = ref(globalThis.localStorage?.getItem('smartpark.alarmSound') === 'off')

/** A short two-tone beep through Web Audio (no sound file to serve). */
function beep() {
  const Ctx = globalThis.AudioContext
  if (!Ctx || muted.value) return
  const ctx = new Ctx()
  const at = ctx.currentTime
  for (const [i, f] of [880, 660].entries()) {
    const osc = ctx.createOscillator()
    const gain = ctx.createGain()
    osc.frequency.value = f
    gain.gain.setValueAtTime(0.15, at + i * 0.25)
    gain.gain.exponentialRampToValueAtTime(0.001, at + i * 0.25 + 0.22)
    osc.connect(gain).connect(ctx.destination)
    osc.start(at + i * 0.25)
    osc.stop(at + i * 0.25 + 0.23)
  }
  setTimeout(() => void ctx.close(), 800)
}

/**
 * A cue for critical alarms that are new since the page opened: the ids to flash, and a
 * beep unless muted (kept in this browser). Alarms present at the first load do not beep.
 */
export function useCriticalCue(alarms: Ref<readonly Alarm[] | undefined>) {
  const seen = new Set<string>()
  let first = true
  const fresh = ref<string[]>([])
  watch(alarms, (list) => {
    if (!list) return
    const critical = list.filter((a) => a.severity === 'P0' && a.state === 'active_unacked')
    const added = critical.filter((a) => !seen.has(a.id)).map((a) => a.id)
    for (const a of critical) seen.add(a.id)
    if (!first && added.length > 0) {
      fresh.value = added
      beep()
    }
    first = false
  })
  function setMuted(value: boolean) {
    muted.value = value
    globalThis.localStorage?.setItem('smartpark.alarmSound', value ? 'off' : 'on')
  }
  return { fresh, muted, setMuted }
}
