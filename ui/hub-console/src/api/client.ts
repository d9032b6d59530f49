import { createHubClient } from '@smartpark/api'
import { currentLocale } from '@smartpark/i18n'

/** The hub's API on this page's origin. */
export const api = createHubClient(currentLocale)
