/** The OpenAPI document is valid OpenAPI 3, lists every route, and Swagger UI is served offline. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { type Gateway, startGateway } from './support/gateway'

let gateway: Gateway
beforeAll(async () => {
  gateway = await startGateway()
})
afterAll(() => gateway?.stop())

interface OpenAPIDoc {
  openapi: string
  info: { title: string; version: string }
  paths: Record<
    string,
    Record<string, { summary?: string; tags?: string[]; responses?: Record<string, unknown> }>
  >
  components: { securitySchemes: Record<string, { type: string; scheme: string }> }
}

describe('OpenAPI and Swagger UI', () => {
  test('/swagger/json is an OpenAPI 3 document with every route described', async () => {
    const response = await fetch(`${gateway.url}/swagger/json`)
    expect(response.status).toBe(200)
    const doc = (await response.json()) as OpenAPIDoc
    expect(doc.openapi).toMatch(/^3\./)
    expect(doc.info.title).toBe('tollgate')
    const expected: Array<[string, string]> = [
      ['/v1/chat/completions', 'post'],
      ['/v1/embeddings', 'post'],
      ['/v1/models', 'get'],
      ['/health/live', 'get'],
      ['/health/ready', 'get'],
      ['/health/startup', 'get'],
      ['/health', 'get'],
      ['/admin/keys', 'post'],
      ['/admin/keys', 'get'],
      ['/admin/keys/{id}', 'get'],
      ['/admin/keys/{id}', 'delete'],
    ]
    for (const [path, method] of expected) {
      const operation = doc.paths[path]?.[method]
      expect(operation, `${method.toUpperCase()} ${path}`).toBeDefined()
      expect(operation!.summary, `${path} summary`).toBeTruthy()
      expect(operation!.tags?.length, `${path} tags`).toBeGreaterThan(0)
      expect(Object.keys(operation!.responses ?? {}).length, `${path} responses`).toBeGreaterThan(0)
    }
    const chat = doc.paths['/v1/chat/completions']!.post!
    expect(Object.keys(chat.responses!)).toEqual(
      expect.arrayContaining(['200', '400', '401', '404', '413', '429']),
    )
    expect(doc.components.securitySchemes.bearerAuth).toMatchObject({ type: 'http', scheme: 'bearer' })
  })

  test('Swagger UI loads its assets from the gateway, not a CDN', async () => {
    const html = await (await fetch(`${gateway.url}/swagger`)).text()
    expect(html).toContain('/swagger/assets/swagger-ui-bundle.js')
    expect(html).not.toMatch(/unpkg|jsdelivr|cdn\./)
    const bundle = await fetch(`${gateway.url}/swagger/assets/swagger-ui-bundle.js`)
    expect(bundle.status).toBe(200)
    expect((await bundle.text()).length).toBeGreaterThan(100_000)
    const css = await fetch(`${gateway.url}/swagger/assets/swagger-ui.css`)
    expect(css.headers.get('content-type')).toContain('text/css')
    expect((await fetch(`${gateway.url}/swagger/assets/..%2Fpackage.json`)).status).toBe(404)
  })
})
