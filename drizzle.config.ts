/**
 * drizzle-kit settings for `bun run db:generate`: one schema file, one migration folder,
 * applied at startup by `db/client.ts` on both Postgres and PGlite.
 */
import { defineConfig } from 'drizzle-kit'

export default defineConfig({
  dialect: 'postgresql',
  schema: './db/schema.ts',
  out: './db/migrations',
})
