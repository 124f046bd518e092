# rumor agent image: `docker build -t rumor .` then `docker run rumor` (flags go after the image).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what `pip install .` needs; runtime dependencies only (no [test] extra).
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gossip/ gossip/
COPY agent/ agent/
RUN pip install --no-cache-dir . \
    && groupadd --system rumor \
    && useradd --system --gid rumor --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin rumor \
    && mkdir -p /data \
    && chown rumor:rumor /data

VOLUME ["/data"]
WORKDIR /data
USER rumor

# Where HTTPS looks for its files when RUMOR_HTTPS_PORT turns it on (mount them there;
# names as `rumor tls ca create` / `rumor tls cert create -server` write them).
ENV RUMOR_TLS_CA_FILE=/etc/rumor/tls/consul-agent-ca.pem \
    RUMOR_TLS_CERT_FILE=/etc/rumor/tls/dc1-server-consul-0.pem \
    RUMOR_TLS_KEY_FILE=/etc/rumor/tls/dc1-server-consul-0-key.pem

# Serf LAN gossip (UDP probes + TCP push/pull), HTTP API, HTTPS API.
EXPOSE 8301/tcp 8301/udp 8500/tcp 8501/tcp

HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["rumor", "members", "-http-addr=127.0.0.1:8500"]

ENTRYPOINT ["rumor", "agent"]
CMD ["-client=0.0.0.0", "-data-dir=/data"]
