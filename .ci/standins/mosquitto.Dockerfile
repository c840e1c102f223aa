# Stand-in for eclipse-mosquitto:2.0.22 (see .ci/standins/build): Debian's Mosquitto 2 on
# the debootstrap'd bookworm image, with the official image's paths and user.
FROM python:3.11-slim-bookworm
# The user first, so that the package's postinst keeps uid/gid 1883 (the official image's;
# the doormat image writes the broker files as the same uid).
RUN groupadd --system --gid 1883 mosquitto \
    && useradd --system --uid 1883 --gid 1883 --no-create-home \
       --home-dir /var/lib/mosquitto --shell /usr/sbin/nologin mosquitto \
    && apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
       mosquitto mosquitto-clients >/dev/null \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /mosquitto/config /mosquitto/data /mosquitto/log \
    && chown -R mosquitto:mosquitto /mosquitto
EXPOSE 1883
CMD ["/usr/sbin/mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]
