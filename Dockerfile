# The Catalyst image: `docker build -t catalyst .`, then `docker run catalyst --help`.
# Used by docker-compose.yml (one service per role, on a 3-node NATS cluster).
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY domain domain
COPY handlers handlers
COPY projections projections
COPY adapters adapters
COPY config config
RUN pip install . && rm -rf /src

# Never root: the process holds broker keys.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin catalyst
USER catalyst
WORKDIR /home/catalyst
# var/: run stores, the mailbox, the embedded server's store when no cluster is configured.
VOLUME ["/home/catalyst/var"]

ENTRYPOINT ["catalyst"]
CMD ["--help"]
