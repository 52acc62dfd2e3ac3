# One image for every project service in docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 FEATURE_REPO=/app/feature_repo
COPY pyproject.toml README.md ./
COPY core ./core
COPY datagen ./datagen
COPY training ./training
COPY devservices ./devservices
COPY batch ./batch
COPY serving ./serving
COPY streaming ./streaming
COPY bench ./bench
COPY scripts ./scripts
COPY feature_repo ./feature_repo
RUN pip install --no-cache-dir -e .
