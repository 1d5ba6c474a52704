# regtape as a container: `regtape replay` (or record) as an unprivileged user, health-checked through
# GET /__regtape/health. Built by scripts/build-image.sh, which prepares the build context (this file and
# rootfs/: /app = the npm package with its production node_modules, /usr/local/bin/node) so that the build
# itself needs no network, and makes the base image from Debian packages when none can be pulled:
#
#   npm ci && npm run build
#   scripts/build-image.sh --tag regtape                    # base: mmdebstrap bookworm, imported locally
#   scripts/build-image.sh --tag regtape --base debian:bookworm-slim   # or any Debian-like base you can pull
#
#   docker run -d --name regtape -p 8000:8000 -v "$PWD/fixtures:/fixtures:ro" regtape           # replay /fixtures
#   docker run ... regtape replay /fixtures --host 0.0.0.0 --port 9000 --strict --report /tmp/r.json
#   docker run ... -v "$PWD/rec:/fixtures" regtape record --upstream https://registry-1.docker.io --out /fixtures --host 0.0.0.0
#     (recording writes as uid 10001: the mounted folder must be writable by it, or run with --user "$(id -u)")
#
# Listens on 8000 ($REGTAPE_PORT) unless told otherwise; the health check finds the port itself (--port on
# the command, else $REGTAPE_PORT, else 8000). Publish it with -p 8000:8000.
# `docker stop` sends SIGTERM, which regtape handles (in-flight exchanges finish, --report is written,
# with --strict the exit code is 1 if a request had no fixture): no init process is needed.
# Few instructions on purpose: with the vfs storage driver every step copies the whole file system.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
# rootfs/ = /usr/local/bin/node and /app (the npm package with its production node_modules).
COPY rootfs/ /
# An account for uid 10001 (no useradd: the base may not have it), and the default fixtures folder.
RUN echo 'regtape:x:10001:10001:regtape:/home/regtape:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'regtape:x:10001:' >> /etc/group \
 && mkdir -p /home/regtape /fixtures \
 && chown 10001:10001 /home/regtape \
 && /usr/local/bin/node --version
ENV NODE_ENV=production HOME=/home/regtape REGTAPE_PORT=8000
USER 10001:10001
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/node", "/app/dist/service/healthcheck.js"]
ENTRYPOINT ["/usr/local/bin/node", "/app/dist/cli.js"]
CMD ["replay", "/fixtures", "--host", "0.0.0.0"]
