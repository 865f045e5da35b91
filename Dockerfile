# The device-activity image: one image, four roles (setup, worker, api, producer) chosen by
# the command, as docker-compose.yml does. Everything in it comes from uv.lock, as on a machine.
# The base is pinned to an exact release: a new Python patch or Debian point release is a
# commit (docs/operations.md, "Dependencies").
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    DEVACT_WORKER_DIR=/var/lib/devact/worker

WORKDIR /app
# uv itself by hash, then the runtime set of uv.lock (no dev or bench extras): a layer that
# changes only with the lock.
COPY scripts/uv-requirements.txt ./scripts/
RUN pip install --no-deps --require-hashes -r scripts/uv-requirements.txt
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-install-project
COPY stream ./stream
COPY api ./api
COPY state ./state
COPY devact ./devact
# /app stays root's and read-only to the service; the worker's one directory is its own.
RUN uv sync --locked --no-editable \
    && useradd --system --no-create-home devact \
    && install -d -o devact -g devact /var/lib/devact
USER devact
VOLUME /var/lib/devact

EXPOSE 8000
CMD ["devact", "api", "--host", "0.0.0.0", "--port", "8000"]
