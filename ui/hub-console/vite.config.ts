import { consoleConfig } from '../vite.console'

// `npm run dev` proxies the API to a running hub (SMARTPARK_HUB).
export default consoleConfig(import.meta.url, process.env.SMARTPARK_HUB ?? 'http://127.0.0.1:8443')
