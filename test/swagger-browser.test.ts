/**
 * Swagger UI in a real browser: Debian's chromium, driven by playwright-core, opens
 * /swagger of a test gateway, sees every tag of the OpenAPI document and the chat
 * completions operation, authorizes with an API key and executes GET /v1/models from the
 * page, reading the 200 answer there. A missing chromium fails the test with the command
 * that installs it; it is never skipped.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type BrowserContext, chromium, type Page } from 'playwright-core'
import { freshPostgresDatabase, type ThrowawayPostgres } from './support/db'
import { type Gateway, startGateway } from './support/gateway'

const chromiumPath = '/usr/bin/chromium'
const installCommand = 'sudo apt-get update && sudo apt-get install -y chromium'
/** Nothing the page does may wait longer; the whole flow takes a second or two. */
const stepTimeoutMs = 15_000

let database: ThrowawayPostgres
let gateway: Gateway
let key: string
let profile: string
let browser: BrowserContext
let page: Page
const pageErrors: string[] = []

beforeAll(async () => {
  if (!existsSync(chromiumPath))
    throw new Error(`chromium is not installed at ${chromiumPath}; install it with:\n  ${installCommand}`)
  database = await freshPostgresDatabase()
  gateway = await startGateway({ env: { DATABASE_URL: database.url } })
  key = await gateway.createKey('swagger-user')
  profile = await mkdtemp(join(tmpdir(), 'tollgate-chromium-'))
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-quic',
      '--no-first-run',
      '--disable-component-update',
      '--disable-sync',
    ],
  })
  browser.setDefaultTimeout(stepTimeoutMs)
  page = await browser.newPage()
  page.on('pageerror', (error) => pageErrors.push(error.message))
}, 60_000)

afterAll(async () => {
  await browser?.close()
  if (profile) await rm(profile, { recursive: true, force: true })
  await gateway?.stop()
  await database?.drop()
})

interface OpenAPIDoc {
  tags?: Array<{ name: string }>
  paths: Record<string, Record<string, { tags?: string[] }>>
}

/** Every tag the document declares or an operation uses. */
async function documentedTags(): Promise<string[]> {
  const doc = (await (await fetch(`${gateway.url}/swagger/json`)).json()) as OpenAPIDoc
  const tags = new Set((doc.tags ?? []).map((tag) => tag.name))
  for (const operations of Object.values(doc.paths))
    for (const operation of Object.values(operations)) for (const tag of operation.tags ?? []) tags.add(tag)
  return [...tags].sort()
}

const operation = (method: string, path: string) =>
  page.locator(`.opblock-${method}:has(.opblock-summary-path[data-path="${path}"])`)

describe('Swagger UI in chromium', () => {
  test('shows every tag and the chat completions operation, all from the gateway', async () => {
    const requested: string[] = []
    page.on('request', (request) => requested.push(request.url()))
    await page.goto(`${gateway.url}/swagger`)
    await page.locator('.swagger-ui .information-container .title').waitFor()
    const tags = await documentedTags()
    expect(tags).toEqual(expect.arrayContaining(['health', 'keys', 'openai']))
    for (const tag of tags) await page.locator(`.opblock-tag[data-tag="${tag}"]`).waitFor()
    const chat = operation('post', '/v1/chat/completions')
    await chat.waitFor()
    expect(await chat.locator('.opblock-summary-description').textContent()).toContain('chat completion')
    expect(requested.filter((url) => !url.startsWith(gateway.url))).toEqual([])
  }, 30_000)

  test('authorizes with a key and executes GET /v1/models from the page', async () => {
    await page.locator('.auth-wrapper button.authorize').click()
    const modal = page.locator('.modal-ux')
    await modal.locator('input').first().fill(key)
    await modal.locator('.auth-btn-wrapper button.authorize').click()
    await modal.locator('.auth-btn-wrapper button.btn-done').click()

    const models = operation('get', '/v1/models')
    await models.locator('.opblock-summary').click()
    await models.locator('button.try-out__btn').click()
    await models.locator('button.execute').click()
    const answer = models.locator('.live-responses-table tr.response')
    await answer.waitFor()
    expect((await answer.locator('.response-col_status').textContent())?.trim()).toBe('200')
    const body = await answer.locator('.response-col_description pre').first().textContent()
    expect(body).toContain('"object": "list"')
    expect(body).toContain('sim-1')
    expect(pageErrors).toEqual([])
  }, 30_000)
})
