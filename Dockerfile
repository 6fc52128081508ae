# One image for every Elpis role (api, worker, beat, flower); docker-compose.yml picks the command.
FROM python:3.11-slim

# bubblewrap: the sandbox of the agent's commands (workers refuse to start without it).
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake git bubblewrap \
    && rm -rf /var/lib/apt/lists/*
# Nothing runs as root: a root worker's sandbox would still own root's files, and RLIMIT_NPROC (the
# fork-bomb limit) does not apply to root.
RUN useradd --system --create-home --uid 10001 --user-group worker \
    && mkdir -p /data && chown worker:worker /data

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY configs ./configs
COPY models ./models
COPY migrations ./migrations
COPY elpis_api ./elpis_api
COPY elpis_worker ./elpis_worker
COPY samples ./samples
# llama-cpp-python compiles here (CPU build); set CMAKE_ARGS for a GPU build.
RUN pip install --no-cache-dir .

ENV ELPIS_HOME=/data
VOLUME ["/data"]
USER worker
EXPOSE 8000 5555
CMD ["elpis", "api", "--host", "0.0.0.0"]
