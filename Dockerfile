# Flywheel image: one image, two roles (docker-compose.yml runs it as `api` and `worker`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only the project's sources (never .venv, .git or a local .flywheel/ holding keys).
# Keep in step with [tool.setuptools] in pyproject.toml (tests/test_compose.py checks it).
COPY pyproject.toml settings.py worker.py ./
COPY procedures/ procedures/
COPY workflows/ workflows/
COPY activities/ activities/
COPY connectors/ connectors/
COPY api/ api/
COPY channels/ channels/
COPY cli/ cli/
COPY db/ db/
COPY security/ security/
COPY runtime/ runtime/
COPY demo/ demo/
COPY knowledge/ knowledge/
# The widget's static files are served from the source tree (/app is the working directory).
COPY web/ web/

# torch first, pinned, so nothing resolves a different build; point pip at a CPU-only index
# (build arg PIP_EXTRA_INDEX_URL / PIP_INDEX_URL) to keep the image small.
RUN pip install "torch==2.13.0"
RUN pip install . \
    && useradd --create-home --uid 10001 flywheel \
    && mkdir -p /app/.flywheel \
    && chown flywheel /app/.flywheel

USER flywheel

EXPOSE 8000

CMD ["python", "worker.py"]
