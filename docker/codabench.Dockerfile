# The Codabench image: the competition's `docker_image`, in which a compute worker runs both steps
# of a submission (the kit's ingestion program with the participant's predict.py, then the
# scoring program), each with the command from its program's metadata.yaml. It is the evaluation
# image (docker/evaluation.Dockerfile: the kit with the model extra on a CUDA PyTorch base, which
# keeps the base's torch) laid out as Codabench runs containers:
#   - no ENTRYPOINT: the worker passes the whole command;
#   - root by default: the worker's bind mounts (/app/output among them) belong to root on the
#     worker, and it drops root's capabilities itself (cap_drop, no-new-privileges);
#   - any other user works as well: HOME is /tmp, /app/output and /app/shared are writable by all
#     where the engine does not mount over them.
# Build from the project's root (`make codabench-image` builds the evaluation image first):
#   docker build --network host -f docker/codabench.Dockerfile --build-arg BASE=mura-evaluation -t mura-codabench .
ARG BASE=mura-evaluation:latest
FROM ${BASE}

# hadolint ignore=DL3002
USER 0:0
RUN mkdir -p /app/program /app/ingested_program /app/input_data /app/input /app/data \
    && install -d -m 1777 /app/output /app/shared
ENV HOME=/tmp PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app/program
ENTRYPOINT []
CMD []
