import { useI18n } from 'vue-i18n'

/**
 * An event kind from the node (`access.manual_open`, `door.forced`, `alarm.raised`) in the
 * user's language; a kind this console does not know yet, as sent.
 */
export function useEventKind() {
  const { t, te } = useI18n()
  return (kind: string): string => {
    if (te(`eventKinds.${kind}`)) return t(`eventKinds.${kind}`)
    const [head, rest] = kind.split('.', 2)
    if (head === 'door' && rest && te(`doors.states.${rest}`)) return t('eventKinds.doorState', { state: t(`doors.states.${rest}`) })
    return kind
  }
}
