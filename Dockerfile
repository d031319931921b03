# syntax=docker/dockerfile:1
#
# The Flows BFF image. Targets:
#   runtime (the default)  the BFF, the sandbox backend and their runtime dependencies only;
#                          what production runs
#   demo                   runtime plus the development OpenID provider's dependency, for the
#                          idp service of docker-compose.yml; never deployed
#
#   docker build -t flows-bff .                      # production image
#   docker build --target demo -t flows-bff-demo .   # development provider image
#
# Production passes its own configuration and its key files (made once with `bff keys`; see
# docs/operating.md, "Production shape"), for example:
#   docker run -v /srv/flows-bff:/etc/flows-bff:ro \
#     -v /srv/flows-bff-secrets:/run/secrets/flows-bff:ro flows-bff \
#     serve --config /etc/flows-bff/production.toml --host 0.0.0.0 --port 8000 --workers 4

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
# build: a wheel of the project, installed with its runtime dependencies into /opt/venv
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY bff ./bff
COPY upstream_client ./upstream_client
COPY sandbox ./sandbox
COPY devstack ./devstack
# bff/dev.toml, the embedded default configuration, is a link to this file.
COPY config/dev.toml ./config/dev.toml
# The wheel, not the source tree, is installed: what runs is exactly what the package declares
# (package data included), and the dev extra (test and lint tools) never enters the image.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install -c requirements.lock /wheels/flows_bff-*.whl \
 && cp requirements.lock /opt/venv/requirements.lock

# ---------------------------------------------------------------------------------------------
# runtime: no compilers, no pip cache, no source tree; a non-root user
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A fixed numeric id, so that volume ownership and Kubernetes runAsUser can name it. A new named
# volume mounted on /data or /var/lib/flows-bff/keys (the session key ring of docker-compose.yml)
# takes the owner of the directory here.
RUN groupadd --system --gid 10001 flows \
 && useradd --system --uid 10001 --gid flows --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin flows \
 && mkdir /data \
 && chown flows:flows /data \
 && mkdir -p /var/lib/flows-bff/keys \
 && chown flows:flows /var/lib/flows-bff/keys \
 && chmod 0700 /var/lib/flows-bff/keys
COPY --from=build /opt/venv /opt/venv
# config/ holds dev.toml, compose.toml and production.example.toml; only compose.toml is a
# working default, and production mounts its own file over /etc/flows-bff.
COPY config/ /etc/flows-bff/
USER 10001:10001
WORKDIR /data
EXPOSE 8000
# The slim image has no curl; python is there. urlopen raises (exit 1) on refusal or non-2xx.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"]
ENTRYPOINT ["bff"]
CMD ["serve", "--config", "/etc/flows-bff/compose.toml", "--host", "0.0.0.0", "--port", "8000"]

# ---------------------------------------------------------------------------------------------
# demo: the development OpenID provider (python -m devstack.idp) needs oidc-provider-mock, which
# is a development dependency; it never ships in the runtime image. Keep the range equal to the
# one of the dev extra in pyproject.toml (tests/test_container_files.py checks it).
# ---------------------------------------------------------------------------------------------
FROM runtime AS demo
USER root
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
      -c /opt/venv/requirements.lock "oidc-provider-mock>=0.3,<0.4"
USER 10001:10001

# The default target is the production image.
FROM runtime
