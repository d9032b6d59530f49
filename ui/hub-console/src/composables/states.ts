// The colour of a contract's or a bill's state tag: what needs someone's attention stands out.
type Tag = 'success' | 'warning' | 'info' | 'danger' | 'primary'

export function contractTag(state: string): Tag {
  switch (state) {
    case 'active':
      return 'success'
    case 'pending_review':
    case 'approved':
      return 'warning'
    case 'rejected':
      return 'danger'
    case 'draft':
      return 'primary'
    default:
      return 'info'
  }
}

export function billTag(state: string): Tag {
  switch (state) {
    case 'paid':
      return 'success'
    case 'issued':
    case 'partly_paid':
      return 'warning'
    case 'overdue':
      return 'danger'
    default:
      return 'info'
  }
}

/** `YYYY-MM` of this browser's today, where the month picker starts. */
export function thisMonth(now = new Date()): string {
  return `${now.getFullYear()}-${String(now.getMonth() + 1).padStart(2, '0')}`
}

/** `YYYY-MM-DD` of this browser's today. */
export function today(now = new Date()): string {
  return `${thisMonth(now)}-${String(now.getDate()).padStart(2, '0')}`
}
