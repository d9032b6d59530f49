import { consoleConfig } from '../vite.console'

// `npm run dev` proxies the API to a running edge (SMARTPARK_EDGE, the demo's by default).
export default consoleConfig(import.meta.url, process.env.SMARTPARK_EDGE ?? 'http://127.0.0.1:8080')
