# The evaluation image: a participant's submission runs in it, offline, under `mura evaluate`:
#   docker run ... -v SUBMISSION:/submission:ro -v DATA:/data:ro -v OUT:/output IMAGE
# runs the submission contract (SPEC §3) from the submission's root:
#   python3 predict.py /data/input.csv /output/output.csv
# Build from the project's root (`make image` does this):
#   docker build --network host -f docker/evaluation.Dockerfile -t mura-evaluation .
# BASE: an image with Python 3.10+ and pip; the default brings CUDA and torch (GPUs with
# `mura evaluate --gpus all`), which the image keeps. EXTRAS=model adds the reference model's
# libraries; EXTRAS= (empty) installs the kit's torch-free side only, enough for plain-Python
# submissions.
ARG BASE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
FROM ${BASE}

ARG EXTRAS=model
COPY pyproject.toml setup.cfg README.md constraints.txt /opt/mura-kit/
COPY mura /opt/mura-kit/mura
COPY scorer /opt/mura-kit/scorer
COPY reference_model /opt/mura-kit/reference_model
COPY docker/base_torch_constraints.py /opt/mura-kit/
# Extra CA certificates for pip (a proxy's own), if the build context has any (make image copies
# $PIP_CERT there); the folder itself always exists.
COPY docker/certs/ /tmp/build-certs/
# PIP_BREAK_SYSTEM_PACKAGES: a Debian base's python refuses system-wide installs (PEP 668); in an
# image there is no system to break. Older pips ignore the variable.
# The project's pins (constraints.txt, as `make install` uses them), except that a base with torch
# keeps its torch and torchvision (base_torch_constraints.py): no second torch over the base's, and
# a build that fails, rather than replaces it, when the base's torch is older than the kit needs.
RUN for cert in /tmp/build-certs/*.crt; do [ -f "$cert" ] && export PIP_CERT="$cert"; done; \
    python3 /opt/mura-kit/base_torch_constraints.py /opt/mura-kit/constraints.txt >/tmp/constraints.txt \
    && PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir --disable-pip-version-check \
        -c /tmp/constraints.txt "/opt/mura-kit${EXTRAS:+[$EXTRAS]}" \
    && rm -rf /tmp/constraints.txt /opt/mura-kit /tmp/build-certs \
    && useradd --no-log-init --uid 1000 --user-group --create-home --shell /usr/sbin/nologin mura \
    && mkdir -p /submission /data /output

# The harness runs the container read-only with a tmpfs /tmp: HOME must be writable.
ENV HOME=/tmp PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# The numeric id of the `mura` user made above: resolvable without the image's passwd file.
USER 1000:1000
WORKDIR /submission
ENTRYPOINT ["python3", "predict.py"]
CMD ["/data/input.csv", "/output/output.csv"]
