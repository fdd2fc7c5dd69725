# Both nodes from one image recipe: `--target identifiable` or `--target anonymised`.
FROM python:3.11-slim-bookworm AS base

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 UPLOADER_DATA=/data

WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY uploader ./uploader
COPY identifiable_node ./identifiable_node
COPY anonymised_node ./anonymised_node
COPY deploy/healthcheck.py /app/healthcheck.py
# A site whose proxy re-signs TLS passes its CA bundle as a build secret (never kept in the image):
#   docker compose build  with  secrets: pip_ca  (or  docker build --secret id=pip_ca,src=ca.pem)
RUN --mount=type=secret,id=pip_ca,required=false \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
    && pip install --no-cache-dir -c constraints.txt . \
    && groupadd --system --gid 10001 uploader \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data uploader \
    && mkdir -p /data /links && chown 10001:10001 /data /links

USER 10001:10001
VOLUME ["/data"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=10s --retries=3 CMD ["python", "/app/healthcheck.py"]

FROM base AS identifiable
EXPOSE 11112
CMD ["python", "-m", "identifiable_node", "--config", "/etc/uploader/identifiable.yaml"]

FROM base AS anonymised
EXPOSE 8443
ENV UPLOADER_HEALTH_URL=https://127.0.0.1:8443/health
CMD ["python", "-m", "anonymised_node", "--config", "/etc/uploader/anonymised.yaml"]
