# One image for every metrics-store service; docker-compose.yml picks the subcommand.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY metrics_store ./metrics_store
COPY api ./api
COPY workers ./workers
RUN pip install ".[all]" && useradd --create-home --uid 10001 metrics
USER metrics

EXPOSE 8000
ENTRYPOINT ["metrics-store"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
