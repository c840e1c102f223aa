# The one image every doormat service in docker-compose.yml runs (relay, enterprises,
# devices, tap, dashboard, and the one-shot `config`). Mosquitto runs its own image.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A non-root user with uid/gid 1883: the eclipse-mosquitto image's `mosquitto` user. The
# broker files `doormat broker config` writes into the shared `config` volume (the
# password file is 0600) are then readable by Mosquitto on its read-only mount.
# /config, /state and /policy (the enterprises' IT policy, docs/compose.md) are owned
# by it, so fresh named volumes mounted there are too.
RUN groupadd --gid 1883 doormat \
    && useradd --uid 1883 --gid 1883 --create-home --shell /usr/sbin/nologin doormat \
    && mkdir -p /config /state /policy \
    && chown doormat:doormat /config /state /policy

WORKDIR /app
COPY . /app
# Installed the way README.md says (`pip install -e .`); the source stays root-owned.
RUN pip install -e .

USER doormat
WORKDIR /state

# Each service overrides this in docker-compose.yml when it needs another check; by
# default the service's heartbeat in $DOORMAT_HEALTH_FILE must be fresh and "ready".
HEALTHCHECK --interval=5s --timeout=5s --start-period=60s --retries=12 \
    CMD ["doormat", "health"]

CMD ["doormat", "--help"]
