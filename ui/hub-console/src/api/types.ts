import type { HubComponents } from '@smartpark/api'

type Schemas = HubComponents['schemas']

export type EdgeView = Schemas['EdgeView']
export type EnterpriseView = Schemas['EnterpriseView']
export type PersonView = Schemas['PersonView']
export type CredentialView = Schemas['CredentialView']
export type AccessGroupView = Schemas['AccessGroupView']
export type UserView = Schemas['UserView']
export type ImportReport = Schemas['ImportReport']
export type EventView = Schemas['EventView']
export type RecordMeta = Schemas['RecordMeta']
