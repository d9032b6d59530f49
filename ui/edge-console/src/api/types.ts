import type { EdgeComponents } from '@smartpark/api'

type Schemas = EdgeComponents['schemas']

export type Site = Schemas['Site']
export type SyncState = Schemas['SyncState']
export type StoreState = Schemas['StoreState']
export type PointView = Schemas['PointView']
export type PointPage = Schemas['PointPage']
export type SampleView = Schemas['SampleView']
export type DeviceView = Schemas['DeviceView']
export type Alarm = Schemas['Alarm']
export type HistoryPage = Schemas['HistoryPage']
