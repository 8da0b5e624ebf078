# syntax=docker/dockerfile:1
# End-to-end demo client (docker compose --profile demo up client): the slim client with its
# classical extra (the demo segments coins by watershed), no TensorFlow.
# checkov:skip=CKV_DOCKER_2: a one-shot job (run the demo, exit) has no running service to probe
# A HEALTHCHECK would have nothing to watch: the demo's exit code is its result.
FROM python:3.11-slim

# Caches go under $HOME; /tmp is writable for any uid.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp

WORKDIR /app

# Only what the package build needs: the build context is the whole repository.
COPY pyproject.toml constraints.txt README.md ./
COPY common/ common/
COPY client/ client/
# Versions come from constraints.txt, which pins the whole resolved tree.
RUN pip install --no-cache-dir -c constraints.txt ".[classical]"

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app
USER 10001:10001

# `serving` is the compose service name; override CMD to point the demo elsewhere.
ENTRYPOINT ["python", "-m", "client.demo"]
CMD ["--server", "serving:8500", "--out", "/out"]
