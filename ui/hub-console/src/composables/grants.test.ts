import { describe, expect, it } from 'vitest'
import { enterprisesOf } from './grants'

describe('enterprisesOf', () => {
  it('reads the enterprises of enterprise grants, once each, and nothing else', () => {
    expect(
      enterprisesOf([
        'enterprise_admin@enterprise:demo-park/acme',
        'enterprise_user@enterprise:demo-park/acme',
        'park_manager@park:demo-park',
        'enterprise_user@enterprise:north/beta.co',
      ]),
    ).toEqual([
      { park: 'demo-park', enterprise: 'acme' },
      { park: 'north', enterprise: 'beta.co' },
    ])
  })
})
