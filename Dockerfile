FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 10001 gateway
WORKDIR /app

COPY pyproject.toml README.md alembic.ini ./
COPY gateway ./gateway
COPY migrations ./migrations
RUN pip install --no-cache-dir -e . && mkdir -p /data/spool && chown -R gateway /data

USER gateway
ENV GATEWAY_HOST=0.0.0.0 GATEWAY_SPOOL_DIR=/data/spool GATEWAY_DATABASE_URL=sqlite+aiosqlite:////data/gateway.db
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"
# `serve` applies pending migrations before it starts listening.
ENTRYPOINT ["canary-gateway"]
CMD ["serve", "--config", "/app/config.yaml"]
