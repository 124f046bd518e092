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

# Serf LAN gossip (UDP probes + TCP push/pull), HTTP API.
EXPOSE 8301/tcp 8301/udp 8500/tcp

HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["rumor", "members", "-http-addr=127.0.0.1:8500"]

ENTRYPOINT ["rumor", "agent"]
CMD ["-client=0.0.0.0", "-data-dir=/data"]
