# One image for the seven processes (six services and the ops console); each Deployment picks
# its process with its command (`python -m gateway serve`, `python -m console serve`, ...).
#   docker build -t loyalty-platform .
# Runs as a non-root user, writes nothing outside /tmp (mount an emptyDir there), so the
# Deployments can set readOnlyRootFilesystem.

# The base is pinned by digest (a tag moves under you); refresh it deliberately with
#   docker buildx imagetools inspect python:3.11-slim
FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7 AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml constraints.txt ./
COPY plumbing plumbing
COPY services services
COPY gateway gateway
COPY console console
COPY protos protos
# Generated stubs are built here, not committed; then the runtime dependencies alone (no
# embedded PostgreSQL or Redis, no dev tools: those are the `dev` extra).
RUN pip install -c constraints.txt grpcio-tools \
 && mkdir gen \
 && python -m grpc_tools.protoc -I protos --python_out=gen --grpc_python_out=gen \
      $(find protos -name '*.proto') \
 && pip install -c constraints.txt . \
 && pip uninstall -y grpcio-tools loyalty-platform

FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7
RUN groupadd --gid 10001 loyalty \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin loyalty
COPY --from=build /opt/venv /opt/venv
COPY --from=build /src/gen /app/gen
COPY --from=build /src/plumbing /app/plumbing
COPY --from=build /src/services /app/services
COPY --from=build /src/gateway /app/gateway
COPY --from=build /src/console /app/console
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app:/app/gen \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GRPC_ENABLE_FORK_SUPPORT=0
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["python", "-m"]
CMD ["gateway", "serve"]
