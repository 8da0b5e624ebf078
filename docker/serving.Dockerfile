# syntax=docker/dockerfile:1
# Production model server: the official TensorFlow Serving image, at the version that matches
# the tensorflow-serving-api pin in pyproject.toml (tests/docker/test_docker.py checks the two agree).
# Models are not baked in: docker-compose.yml mounts ../models read-only at /models.
FROM tensorflow/serving:2.21.0

# A fixed non-root uid, so host permissions on the mounted models are predictable.
RUN groupadd --system --gid 10001 serving \
    && useradd --system --uid 10001 --gid serving --no-create-home \
       --shell /usr/sbin/nologin serving

# Root-owned and read-only for the server user: the server only ever reads its config.
COPY serving/models.config serving/batching.config serving/monitoring.config /config/
# The image has no curl; this probe is bash-only (/dev/tcp) and needs nothing installed.
COPY --chmod=0755 docker/healthcheck.sh /usr/local/bin/healthcheck.sh

USER 10001:10001

EXPOSE 8500 8501

# Healthy only once every model reports a version AVAILABLE over REST; the start period covers
# loading and warm-up of the three SavedModels.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/healthcheck.sh"]

# Call the server directly rather than the image's tf_serving_entrypoint.sh, so the flags below
# are the whole command line (docker-compose.yml repeats them in `command:`, and the parity test
# runs the embedded `python -m serving` with exactly those flags).
ENTRYPOINT ["tensorflow_model_server"]
CMD ["--port=8500", "--rest_api_port=8501", \
     "--model_config_file=/config/models.config", \
     "--model_config_file_poll_wait_seconds=30", \
     "--file_system_poll_wait_seconds=5", \
     "--allow_version_labels_for_unavailable_models", \
     "--enable_batching", "--batching_parameters_file=/config/batching.config", \
     "--monitoring_config_file=/config/monitoring.config", \
     "--grpc_channel_arguments=grpc.max_connection_age_ms=60000"]
