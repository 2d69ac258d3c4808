/**
 * OpenAPI document and Swagger UI. The UI's assets come from the pinned `swagger-ui-dist`
 * package, never a CDN, so the docs work offline and never change under us.
 */
import { dirname, join } from 'node:path'
import { openapi } from '@elysiajs/openapi'
import { Elysia, t } from 'elysia'

const assetsDir = dirname(Bun.resolveSync('swagger-ui-dist/package.json', import.meta.dir))
const assets: Record<string, string> = {
  'swagger-ui.css': 'text/css; charset=utf-8',
  'swagger-ui-bundle.js': 'text/javascript; charset=utf-8',
  'favicon-32x32.png': 'image/png',
}

export interface DocsOptions {
  version: string
}

export function docsRoutes({ version }: DocsOptions) {
  return new Elysia({ name: 'tollgate/routes/docs' })
    .get(
      '/swagger/assets/:file',
      function serveSwaggerAsset({ params, set }) {
        const type = assets[params.file]
        if (!type) return new Response('Not Found', { status: 404 })
        set.headers['content-type'] = type
        set.headers['cache-control'] = 'public, max-age=86400'
        return Bun.file(join(assetsDir, params.file))
      },
      { params: t.Object({ file: t.String() }), detail: { hide: true } },
    )
    .use(
      openapi({
        path: '/swagger',
        specPath: '/swagger/json',
        provider: 'swagger-ui',
        exclude: { paths: ['/swagger', '/swagger/json', '/swagger/assets/:file'] },
        swagger: {
          theme: '/swagger/assets/swagger-ui.css',
          cdn: '/swagger/assets/swagger-ui-bundle.js',
          autoDarkMode: false,
          persistAuthorization: true,
        },
        documentation: {
          info: {
            title: 'tollgate',
            version,
            description:
              'An AI gateway that speaks the OpenAI wire format and adds quotas, caching, circuit breakers, cost accounting and observability around every model call.',
          },
          tags: [
            { name: 'openai', description: 'OpenAI-compatible model routes (API key)' },
            { name: 'health', description: 'Liveness, readiness and startup probes' },
            { name: 'keys', description: 'API key administration (admin key)' },
          ],
          components: {
            securitySchemes: {
              bearerAuth: {
                type: 'http',
                scheme: 'bearer',
                description:
                  'A tollgate API key (`tg-...`) for /v1 routes, or the admin key for /admin routes.',
              },
            },
          },
        },
      }),
    )
}
