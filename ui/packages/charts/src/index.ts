import { defineAsyncComponent } from 'vue'

export { lttb, type Point } from './downsample'

/** The chart component, with ECharts loaded only when a chart is first shown. */
export const LazyChart = defineAsyncComponent(async () => (await import('./registry')).VChart)
export { lineOption, seriesOf, type HistoryRow } from './series'
