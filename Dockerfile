# Portcullis in a container: the package as `npm pack` makes it, installed with its production
# dependencies only, run as a non-root user. Build: docker build -t portcullis .
# Run: docker run -v ./portcullis.yaml:/etc/portcullis/portcullis.yaml:ro -v ./policies:/etc/portcullis/policies:ro \
#        -v portcullis-data:/var/lib/portcullis -p 8080:8080 portcullis
# (docs/deploy.md: the config, the volumes for the store and keys, Kubernetes.)

# 1. The package: sources compiled to dist/ and packed, as a user's tarball.
FROM node:24-bookworm-slim AS package
# better-sqlite3 builds from source against Node's headers, which this image has under /usr/local.
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
ENV npm_config_nodedir=/usr/local
WORKDIR /src
COPY . .
RUN npm ci --no-audit --no-fund && npm pack --pack-destination /pkg

# 2. The package installed with production dependencies only (no tsx, no sources, no tests).
FROM node:24-bookworm-slim AS install
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
ENV npm_config_nodedir=/usr/local
WORKDIR /opt/portcullis
COPY --from=package /pkg/ /pkg/
RUN npm init -y >/dev/null && npm install --omit=dev --no-audit --no-fund /pkg/portcullis-*.tgz

# 3. The runtime: Node and the installed package, nothing else.
FROM node:24-bookworm-slim
ENV NODE_ENV=production
WORKDIR /var/lib/portcullis
COPY --from=install /opt/portcullis/node_modules /opt/portcullis/node_modules
# The store (SQLite) and recordings live in /var/lib/portcullis; config and policy are mounted read-only.
RUN mkdir -p /etc/portcullis /var/lib/portcullis && chown node:node /var/lib/portcullis
USER node
VOLUME ["/var/lib/portcullis"]
EXPOSE 8080 8081
HEALTHCHECK --interval=30s --timeout=3s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:8080/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
STOPSIGNAL SIGTERM
# --max-semi-space-size=8: V8's young generation at 16 MB instead of up to 32 MB; --max-old-space-size=1024:
# a 1 GiB heap ceiling, by which V8 also grows the heap to about 1.6 times what is live, not 4 (docs/operations.md, "Memory").
ENTRYPOINT ["node", "--max-semi-space-size=8", "--max-old-space-size=1024", "/opt/portcullis/node_modules/portcullis/bin/portcullis.js"]
CMD ["serve", "-c", "/etc/portcullis/portcullis.yaml", "--log-format", "json"]
