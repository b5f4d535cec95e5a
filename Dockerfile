# Build the wheel in one stage and install only the wheel in the image: the image
# runs exactly what users install with pip, migrations included.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN pip install --no-cache-dir build
COPY pyproject.toml setup.py README.md ./
COPY gateway ./gateway
COPY migrations ./migrations
RUN python -m build --wheel --outdir /dist .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --create-home --uid 10001 gateway
COPY --from=build /dist/*.whl /tmp/
# tiktoken's encodings (the count_tokens estimate) are fetched at build time, so the container
# never needs the network for them.
ENV TIKTOKEN_CACHE_DIR=/opt/tiktoken
RUN pip install --no-cache-dir /tmp/*.whl && rm /tmp/*.whl \
    && python -c "import tiktoken; [tiktoken.get_encoding(name) for name in ('o200k_base', 'cl100k_base')]" \
    && mkdir -p /data/spool /app && chown -R gateway /data

USER gateway
WORKDIR /app
ENV GATEWAY_HOST=0.0.0.0 GATEWAY_SPOOL_DIR=/data/spool GATEWAY_DATABASE_URL=sqlite+aiosqlite:////data/gateway.db
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"
# `serve` applies pending migrations (shipped inside the package) before it starts listening.
ENTRYPOINT ["canary-gateway"]
CMD ["serve", "--config", "/app/config.yaml"]
