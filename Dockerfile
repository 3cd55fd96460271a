# backup-proxy image: a multi-stage build (compile TypeScript with dev dependencies, then a runtime
# stage with production dependencies only), running as the unprivileged `node` user.
#   docker build -t backup-proxy .
#   docker run --rm -e REDIS_URL=redis://redis:6379 -e BACKUP_PROXY_PROXY_ID=site-a backup-proxy serve
# The HTTP endpoints listen on 0.0.0.0:9464 inside the container (BACKUP_PROXY_HTTP_LISTEN); publish the
# port only where Prometheus needs it.
# the current Node.js LTS line (package.json engines lists the supported lines; on 24, node:zlib has zstd,
# so XVA zstd needs no system binary in the image)
ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /src
# dependencies first, so source edits do not invalidate the npm layer; test/shims holds the local
# packages that package.json references with file: (dev dependencies)
COPY package.json package-lock.json ./
COPY test/shims ./test/shims
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY bin ./bin
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    BACKUP_PROXY_HTTP_LISTEN=0.0.0.0:9464
WORKDIR /app
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY --from=build /src/bin ./bin
# /backups is where a file:// remote of the demo lives (a volume); the process runs as `node` (uid 1000)
RUN mkdir -p /backups && chown node:node /backups
USER node
EXPOSE 9464
# probes /healthz on the port of BACKUP_PROXY_HTTP_LISTEN (so overriding the port keeps it working)
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "const l = process.env.BACKUP_PROXY_HTTP_LISTEN || ':9464'; fetch('http://127.0.0.1:' + l.slice(l.lastIndexOf(':') + 1) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "/app/bin/backup-proxy.js"]
CMD ["serve"]
