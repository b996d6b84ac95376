# The SegArena platform image (API and workers share it; the command picks the role).
# Where no registry is reachable, build FROM a local base that has python3 + pip.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api ./api
COPY worker ./worker
COPY evaluator ./evaluator
COPY leaderboard_web ./leaderboard_web
COPY server ./server
COPY data_manifests ./data_manifests
COPY segarena ./segarena
RUN pip install --no-cache-dir ".[server]"
ENV SEGARENA_DATA_DIR=/var/lib/segarena
EXPOSE 8000
CMD ["segarena", "serve", "--host", "0.0.0.0", "--port", "8000"]
