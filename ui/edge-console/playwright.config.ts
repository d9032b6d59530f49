import { e2eConfig } from '../e2e/config'

// End-to-end tests of the edge console against a real edge node with simulated devices,
// which tests/hil/console.rs starts and names in SMARTPARK_CONSOLE_URL.
export default e2eConfig('SMARTPARK_CONSOLE_URL', 60_000)
