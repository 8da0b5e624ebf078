# syntax=docker/dockerfile:1
# One-shot trainer: trains the slim demo models that /models lacks and exports them there
# (docker compose --profile train run --rm trainer). Build context: the repository root.
# checkov:skip=CKV_DOCKER_2: a one-shot job (train, export, exit) has no running service to probe
# A HEALTHCHECK would have nothing to watch: compose waits on the trainer's exit code instead
# (service_completed_successfully in docker-compose.yml).
FROM python:3.11-slim

# Keras, matplotlib and TensorFlow write caches under $HOME; /tmp is writable whichever uid
# compose runs the container as (see `user:` in docker-compose.yml).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp

WORKDIR /app

# Only what the package build needs, listed one by one: the build context is the whole
# repository (models/, runs/, .venv/ included), and there is no .dockerignore for it.
COPY pyproject.toml constraints.txt README.md ./
COPY common/ common/
COPY training/ training/
COPY export/ export/
COPY serving/ serving/
COPY client/ client/
# Versions come from constraints.txt, which pins the whole resolved tree.
RUN pip install --no-cache-dir -c constraints.txt ".[train]"

# The shipped slim runs, exported by default (TRAIN=1 trains instead).
COPY shipped-runs/ shipped-runs/
COPY --chmod=0755 docker/train_and_export.sh /usr/local/bin/train_and_export.sh

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app
USER 10001:10001

ENTRYPOINT ["/usr/local/bin/train_and_export.sh"]
