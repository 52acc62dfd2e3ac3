# One image for every project service in docker-compose.yml.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FEATURE_REPO=/app/feature_repo
WORKDIR /app

# The dependencies in a layer of their own, rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The code the compose services run, and what it imports (tests/unit/test_compose.py checks
# the list); bench/, verify/, harness/ and scripts/ are tools of a checkout, not shipped.
COPY README.md ./
COPY core ./core
COPY datagen ./datagen
COPY training ./training
COPY registry ./registry
COPY batch ./batch
COPY serving ./serving
COPY streaming ./streaming
COPY devservices ./devservices
COPY feature_repo ./feature_repo
RUN pip install --no-deps -e . \
    && useradd --create-home --uid 10001 app \
    && mkdir -p /app/data /app/recovery \
    && chown -R app:app /app/data /app/recovery /app/feature_repo

# Named volumes mounted on /app/data and /app/recovery start with this ownership.
USER app
