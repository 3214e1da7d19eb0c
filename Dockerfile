# guardrail as a sidecar: `guardrail serve` in front of a recommendation service in any language.
#
#   docker build -t guardrail .
#   docker run -p 8080:8080 -e GUARDRAIL_UPSTREAM=http://recommender:8000 \
#       -v "$PWD/config/guardrail.yaml:/etc/guardrail/guardrail.yaml:ro" guardrail
#
# Settings come from the environment (GUARDRAIL_CONFIG, GUARDRAIL_STORE, GUARDRAIL_UPSTREAM, secrets such as
# GUARDRAIL_LOG_KEY and GUARDRAIL_CSRF_KEY); the policy is mounted at /etc/guardrail/. `docker kill -s HUP`
# re-reads it. tests/test_dockerfile.py runs this image's CMD and HEALTHCHECK outside Docker.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: install the package and its dependencies into a virtual environment ---------------------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# A C compiler for guardrail/_speedups.c (the per-item loop); only this stage has it. Debian's
# versions are pinned by the base image's release, so the packages are not pinned again here.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
# Everything from the lock files, hashes checked: the image runs the versions CI tested. The wheel is built
# here, with its C extension, from the sources (a *.so from the build context is never used: .dockerignore).
COPY requirements/build.txt requirements/runtime.txt ./requirements/
RUN python -m venv /opt/build \
    && /opt/build/bin/pip install --require-hashes --no-deps -r requirements/build.txt \
    && python -m venv /opt/guardrail \
    && /opt/guardrail/bin/pip install --require-hashes --no-deps -r requirements/runtime.txt
COPY pyproject.toml README.md LICENSE hatch_build.py ./
COPY config ./config
COPY guardrail ./guardrail
RUN PATH=/opt/build/bin:$PATH pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/wheels . \
    && /opt/guardrail/bin/pip install --no-deps /tmp/wheels/*.whl \
    && /opt/guardrail/bin/python -c "import guardrail.items as i; assert i.ACCELERATED, 'the C loop was not built'"

# --- run: the virtual environment only, as a user without privileges ---------------------------------
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 guardrail \
    && useradd --system --uid 10001 --gid guardrail --no-create-home --shell /usr/sbin/nologin guardrail
COPY --from=build /opt/guardrail /opt/guardrail
COPY config/guardrail.yaml /etc/guardrail/guardrail.yaml
ENV PATH=/opt/guardrail/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GUARDRAIL_CONFIG=/etc/guardrail/guardrail.yaml \
    GUARDRAIL_STORE=memory:// \
    GUARDRAIL_LOG_LEVEL=info
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/guardrail/healthz', timeout=2)"]
# Exec form: guardrail is PID 1 and gets SIGTERM (graceful stop) and SIGHUP (policy reload) itself.
CMD ["guardrail", "serve", "--host", "0.0.0.0", "--port", "8080"]
