# The device-activity image: one image, four roles (setup, worker, api, producer) chosen by
# the command, as docker-compose.yml does.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream ./stream
COPY api ./api
COPY state ./state
COPY devact ./devact
RUN pip install . \
    && useradd --system --no-create-home devact
USER devact

EXPOSE 8000
CMD ["devact", "api", "--host", "0.0.0.0", "--port", "8000"]
