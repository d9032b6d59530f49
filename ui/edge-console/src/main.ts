import { startConsole } from '@smartpark/layout'
import 'element-plus/theme-chalk/base.css'
import '@smartpark/layout/src/base.css'
import App from './App.vue'
import { router } from './router'
import { messages } from './locales'

startConsole(App, router, messages)
