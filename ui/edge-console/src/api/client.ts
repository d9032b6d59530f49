import { createEdgeClient } from '@smartpark/api'
import { currentLocale } from '@smartpark/i18n'

/** The edge's LAN API on this page's origin. */
export const api = createEdgeClient(currentLocale)
