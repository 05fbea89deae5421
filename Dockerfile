# syntax=docker/dockerfile:1
# The Stagewise job image: one container for every task group of the pipeline. Step Functions runs
# it on ECS Fargate (Spot) as `stagewise-task <group> --run-id R --data s3://... --env <env>` with
# the task token in the environment (platform/contract.py names it; pipeline/entrypoint.py has the
# whole contract).
#
# Two stages: the builder turns the package and its dependencies into wheels; the runtime installs
# only those wheels (bind-mounted, so they never land in a layer) on a clean python:3.11-slim, and
# runs as an unprivileged user. Built by the docker-build provider in platform/ (BuildKit).

FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY stacks/ stacks/
COPY platform/ platform/
COPY registry/ registry/
COPY pipeline/ pipeline/
COPY monitoring/ monitoring/
# The package only: no `local` (the embedded AWS, the data generator), `deploy` (Pulumi) or `dev`
# extras (tests/test_lean_install.py runs a task group without them). XGBoost comes as `xgboost-cpu` (the
# CPU-only build, no CUDA or NCCL, ~10x smaller than the `xgboost` wheel): fail the build if the
# GPU wheel or NCCL slipped in through a dependency.
RUN pip wheel --wheel-dir /wheels . \
 && ls /wheels | grep -q '^xgboost_cpu-' \
 && ! ls /wheels | grep -Eq '^xgboost-[0-9]' \
 && ! ls /wheels | grep -Eiq '^nvidia_'

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    GX_ANALYTICS_ENABLED=false \
    STAGEWISE_HOME=/tmp/stagewise
RUN groupadd --system --gid 10001 stagewise \
 && useradd --system --uid 10001 --gid stagewise --create-home --home-dir /home/stagewise \
      --shell /usr/sbin/nologin stagewise
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels stagewise
# The settings loader reads the stack files (Pulumi.yaml marks the project root; cwd is searched).
WORKDIR /app
COPY Pulumi.yaml Pulumi.dev.yaml Pulumi.test.yaml Pulumi.prod.yaml ./
USER 10001:10001
# Exec form: the Python process is PID 1 and receives Fargate's SIGTERM itself (exit 143 on Spot
# interruption). Batch tasks need no HEALTHCHECK.
ENTRYPOINT ["stagewise-task"]
CMD ["--help"]
