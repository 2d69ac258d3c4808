# tollgate container image. Bun runs the TypeScript sources directly, so there is no build
# step: one stage resolves the production dependencies, the other is what ships.
#
# The tag pins an exact Bun release of the major CI installs (BUN_MAJOR in .ci/run), so a
# rebuild never changes the runtime underneath us; move it forward with the lockfile.

FROM oven/bun:1.4.5-slim AS deps
WORKDIR /app
COPY package.json bun.lock ./
# --frozen-lockfile fails the build when bun.lock disagrees with package.json instead of
# resolving something untested; --production leaves the dev tooling out of the image.
RUN bun install --frozen-lockfile --production

FROM oven/bun:1.4.5-slim AS runtime
WORKDIR /app
# Bun's fetch keeps at most 256 requests in flight by default, and every upstream call (a
# stream holds its own for minutes) is a fetch: stream 257 would wait for a free slot.
ENV NODE_ENV=production \
    PORT=8080 \
    DATA_DIR=/data \
    BUN_CONFIG_MAX_HTTP_REQUESTS=65535
COPY --from=deps /app/node_modules ./node_modules
COPY package.json bun.lock tsconfig.json ./
COPY db ./db
COPY plugins ./plugins
COPY src ./src
# /data holds PGlite when no DATABASE_URL is given. The directory must exist and belong to
# `bun` before VOLUME, or a fresh volume is created root-owned and the non-root process
# cannot write to it.
RUN mkdir -p /data && chown bun:bun /data
VOLUME ["/data"]
# The image ships a non-root `bun` user; the sources stay root-owned and so read-only to it.
USER bun
EXPOSE 8080
# Slim images have no curl or wget; bun itself is the probe. It reads PORT from the
# container's environment so the check follows a changed port.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["bun", "-e", "fetch(`http://127.0.0.1:${process.env.PORT ?? 8080}/health/live`).then((r) => process.exit(r.ok ? 0 : 1)).catch(() => process.exit(1))"]
CMD ["bun", "run", "src/main.ts"]
