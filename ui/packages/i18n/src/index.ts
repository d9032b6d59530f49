import { computed, ref, type App } from 'vue'
import { createI18n } from 'vue-i18n'
import elementZhCn from 'element-plus/es/locale/lang/zh-cn.mjs'
import elementEn from 'element-plus/es/locale/lang/en.mjs'
import { en as commonEn, zhCN as commonZh } from './common'

export { en as commonEn, zhCN as commonZh, type Messages, type Shape } from './common'
export { keysOf, missingKeys } from './keys'

export const LOCALES = ['zh-CN', 'en'] as const
export type Locale = (typeof LOCALES)[number]

const STORAGE_KEY = 'smartpark.locale'

function initialLocale(): Locale {
  const saved = globalThis.localStorage?.getItem(STORAGE_KEY)
  return saved === 'en' || saved === 'zh-CN' ? saved : 'zh-CN'
}

const current = ref<Locale>(initialLocale())
let active: { global: { locale: { value: string } } } | null = null

/** The app's i18n: the shared common.* words merged under each app's own messages. */
export function setupI18n<M extends object>(app: App, messages: { 'zh-CN': M; en: M }) {
  const i18n = createI18n({
    legacy: false,
    locale: current.value,
    fallbackLocale: 'zh-CN',
    missingWarn: import.meta.env.DEV,
    fallbackWarn: false,
    messages: {
      'zh-CN': { ...commonZh, ...messages['zh-CN'] },
      en: { ...commonEn, ...messages.en },
    },
  })
  app.use(i18n)
  active = i18n as unknown as typeof active
  if (typeof document !== 'undefined') document.documentElement.lang = current.value
  return i18n
}

/** The language the user chose (kept in this browser), and Element Plus's matching locale. */
export function useLocale() {
  return {
    locale: current,
    elementLocale: computed(() => (current.value === 'en' ? elementEn : elementZhCn)),
    setLocale(locale: Locale) {
      current.value = locale
      if (active) active.global.locale.value = locale
      globalThis.localStorage?.setItem(STORAGE_KEY, locale)
      document.documentElement.lang = locale
    },
  }
}

export function currentLocale(): Locale {
  return current.value
}
export { bytes, dateTime, value } from './format'
export { fenOf, fixedPoint, trimmed, yuan } from './money'
