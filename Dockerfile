# primaa service image: SQLite in /data by default, built-in algorithms.
# It listens on 0.0.0.0, so it needs API keys: run it with -e PRIMAA_API_KEYS=<key or
# sha256:hex>,...; without keys `primaa serve` exits 2 unless -e PRIMAA_ALLOW_OPEN=true.
# On SIGTERM it drains: running jobs get shutdown_grace_seconds (30 s) and callbacks
# webhook_timeout (10 s) more, so stop it with `docker stop --time 45` (compose:
# stop_grace_period: 45s); Docker's default 10 s would kill the running jobs.
# Workers: one per CPU of the container's quota (--cpus), not of the host.
# Not built in this project's CI (no Docker engine there).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY primaa ./primaa
# The postgres extra: the same image serves as a replica on PostgreSQL. The dask extra:
# it runs on a Dask cluster (PRIMAA_EXECUTOR=dask), and serves as the cluster's scheduler
# and workers too (--entrypoint dask; docs/deploy.md).
RUN pip install '.[postgres,dask]' \
    && useradd --system --uid 10001 --home-dir /data --create-home primaa

USER primaa
ENV PRIMAA_DATA_DIR=/data \
    PRIMAA_LOG_FORMAT=json
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"

STOPSIGNAL SIGTERM
ENTRYPOINT ["primaa"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
