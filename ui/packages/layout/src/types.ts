export interface NavItem {
  /** Route path. */
  path: string
  /** Already translated. */
  label: string
  /** Hidden when the user lacks it. */
  visible?: boolean
  /** A count to show beside the label (unacknowledged alarms...). */
  badge?: number
}

/** The state of a link the page depends on, for the header. */
export interface LinkState {
  label: string
  state: 'up' | 'down' | 'unknown'
  title?: string
}
