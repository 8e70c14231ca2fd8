# Test image: the Codabench test image (docker/codabench.Dockerfile on the evaluation image built
# without the model extra) plus what the reference model's CPU path needs at run time (openvino,
# predict's default engine; onnxruntime, its fallback; pillow), so that tests/test_codabench_worker.py
# runs the kit's reference submission in it without a multi-GB torch. .ci/docker-up builds it from
# the project's root:
#   docker build --network host -f tests/docker/model-runtime.Dockerfile --build-arg BASE=mura-codabench:test .
ARG BASE=mura-codabench:test
FROM ${BASE}

COPY docker/certs/ /tmp/build-certs/
# The newest of each, as the kit's model extra (unpinned) takes them.
# hadolint ignore=DL3013
RUN for cert in /tmp/build-certs/*.crt; do [ -f "$cert" ] && export PIP_CERT="$cert"; done; \
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir --disable-pip-version-check \
        openvino onnxruntime pillow \
    && rm -rf /tmp/build-certs
