# syntax=docker/dockerfile:1
#
# cachesync image: one image for every role.
#
#   docker build -t cachesync .
#   docker run --rm -v "$PWD/config:/etc/cachesync:ro" -e MYSQL_PASSWORD cachesync run --role tailer -c /etc/cachesync/cachesync.yaml
#   docker run --rm cachesync --version          # any subcommand: the entrypoint is the cachesync binary
#   docker run --rm --entrypoint sh cachesync -c 'cachesync check'   # `cachesync` is on the PATH
#
# Stage 1 compiles the TypeScript with the dev dependencies, then prunes them away; stage 2 copies
# only the compiled code, the production node_modules and the default config onto a fresh base.

# Node 24, a long-term-support line (supported into 2028).
ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
# Manifests first, so the dependency layer is rebuilt only when they change, not on every source edit.
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm \
    npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
# Everything stays owned by root and read-only to the process: the service writes nothing to its
# own tree, which is also what lets Kubernetes run it with readOnlyRootFilesystem.
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# `cachesync` on the PATH, for `kubectl exec ... cachesync status` and the like. Logs are JSON lines:
# pino-pretty, a development dependency, is not in the image.
RUN chmod 0755 /app/dist/cli.js && ln -s /app/dist/cli.js /usr/local/bin/cachesync
# The default config (`config/cachesync.yaml` relative to WORKDIR); deployments mount their own and
# pass `-c` or set CACHESYNC_CONFIG.
COPY config ./config

# The base image's unprivileged `node` user (uid/gid 1000), given by number so Kubernetes
# `runAsNonRoot` can verify it without looking up /etc/passwd.
USER 1000:1000

# Prometheus /metrics, liveness /healthz and readiness /readyz (config `metrics.port`).
EXPOSE 9464

# Node runs as PID 1 and handles SIGTERM itself: it drains in-flight work and exits 0 within the
# configured grace period (30 s by default), so orchestrators should allow a little more than that.
ENTRYPOINT ["cachesync"]
CMD ["run"]
