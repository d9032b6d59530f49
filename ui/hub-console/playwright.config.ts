import { e2eConfig } from '../e2e/config'

// End-to-end tests of the hub console against a real hub with a real edge enrolled and
// synced over QUIC, which tests/hil/hub_console.rs starts and names in SMARTPARK_HUB_URL.
export default e2eConfig('SMARTPARK_HUB_URL', 90_000)
