# regtape as a container: serves a fixture folder mounted at /fixtures on port 8000.
#
#   docker build -t regtape .
#   docker run --rm -p 8000:8000 -v "$PWD/fixtures:/fixtures:ro" regtape              # replay /fixtures
#   docker run --rm -p 8000:8000 regtape replay /app/examples/hello-pull --host 0.0.0.0 --port 8000   # the bundled demo
#   docker run --rm -p 8000:8000 -v "$PWD/fixtures:/fixtures" regtape \
#     record --upstream https://registry-1.docker.io --out /fixtures --host 0.0.0.0 --port 8000
#     (recording writes as uid 1000, the image's `node` user: the mounted folder must be writable by it)
#
# `docker stop` sends SIGTERM, which regtape handles (in-flight exchanges are finished; with --strict the
# exit code is 1 if a request had no fixture), so no init process is needed.

# ---- build: compile TypeScript to dist/ ----
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` (tsc) needs src/, which is copied after this layer so that the
# dependency layer is reused when only the sources change.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# ---- runtime: production dependencies and dist/ only ----
FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: there is no tsc here for the `prepare` script, and dist/ comes from the build stage.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY examples/hello-pull ./examples/hello-pull
# The node image's unprivileged user (uid 1000).
USER node
EXPOSE 8000
# A TCP connect only: an HTTP request would be served (and counted) from the fixtures, and with
# --strict an unrecorded health-check path would fail the run. Adjust the port if you change --port.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["node", "-e", "require('net').connect(8000, '127.0.0.1').on('connect', () => process.exit(0)).on('error', () => process.exit(1))"]
ENTRYPOINT ["node", "/app/dist/cli.js"]
CMD ["replay", "/fixtures", "--host", "0.0.0.0", "--port", "8000"]
