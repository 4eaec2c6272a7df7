# One image for every Tend service; the command picks the service.
#   docker build -t tend .
#   docker run tend uvicorn services.ingest.app:create_app --factory --host 0.0.0.0 --port 8001
#   (the console: services.console.app:create_app on port 8000)
# The console's browser assets, pinned by its package-lock.json (served by the console itself).
FROM node:20-bookworm-slim AS console-assets
WORKDIR /assets
COPY services/console/package.json services/console/package-lock.json ./
RUN npm ci --no-audit --no-fund

FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY shared ./shared
COPY cli ./cli
COPY services ./services
COPY bench ./bench
COPY --from=console-assets /assets/node_modules ./services/console/node_modules
RUN pip install --disable-pip-version-check . \
 && useradd --system --uid 10001 tend
USER tend

EXPOSE 8000 8001 8002 8003
CMD ["uvicorn", "services.ingest.app:create_app", "--factory", "--host", "0.0.0.0", "--port", "8001", "--loop", "uvloop", "--http", "httptools", "--no-access-log"]
