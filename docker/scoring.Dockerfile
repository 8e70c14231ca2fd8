# The scoring image: the organisers' side only (scorer, leaderboard, harness), no torch.
#   docker build --network host -f docker/scoring.Dockerfile -t mura-scoring .
#   docker run --rm --network none -v "$PWD:/work" mura-scoring score /work/test.csv /work/output.csv
ARG BASE=python:3.11-slim
FROM ${BASE}

COPY pyproject.toml setup.cfg README.md constraints.txt /opt/mura-kit/
COPY mura /opt/mura-kit/mura
COPY scorer /opt/mura-kit/scorer
COPY docker/certs/ /tmp/build-certs/
# The base install (setup.cfg) is torch-free; the reference model's sources are left out.
RUN for cert in /tmp/build-certs/*.crt; do [ -f "$cert" ] && export PIP_CERT="$cert"; done; \
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir --disable-pip-version-check \
        -c /opt/mura-kit/constraints.txt /opt/mura-kit \
    && rm -rf /opt/mura-kit /tmp/build-certs \
    && useradd --no-log-init --uid 1000 --user-group --create-home --shell /usr/sbin/nologin mura

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# The numeric id of the `mura` user made above: resolvable without the image's passwd file.
USER 1000:1000
WORKDIR /work
ENTRYPOINT ["mura"]
CMD ["--help"]
