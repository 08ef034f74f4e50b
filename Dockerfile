# mpmlab: the dashboard with its embedded server core.
#
#   docker build -t mpmlab:0.1.0 .
#   docker run --rm -p 127.0.0.1:8000:8000 --shm-size 256m --init -e MPMLAB_TOKEN=change-me-please mpmlab:0.1.0
#   then open http://127.0.0.1:8000/?token=change-me-please once (it sets the control cookie)
#
# The same steps as `./dev.sh setup` (every Python package from requirements.lock with its hashes,
# then mpmlab itself without dependencies; `npm ci` from package-lock.json; the front-end files
# copied into static/vendor by `python -m mpmlab.vendor`) without the Debian packages the tests compare
# against. Layers go from what changes least to what changes most: a source edit reuses the
# dependency layers. Every option of `mpmlab dashboard` can be given as an environment variable of
# the same name (MPMLAB_PORT, MPMLAB_ATTACH, ...; see docs/ecosystem.md).

# -- front-end libraries, from package-lock.json (Node.js 24, the LTS line) --------------------------
FROM node:24.11.0-bookworm-slim AS frontend
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error

# -- the application --------------------------------------------------------------------------------
FROM python:3.11.13-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /opt/mpmlab
# 1. the pinned dependencies: this layer is rebuilt only when the lock changes
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock \
    && useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin mpmlab
# 2. the front-end libraries: rebuilt only when package-lock.json changes
COPY --from=frontend /src/node_modules ./node_modules
# 3. the project (.dockerignore keeps tests, benchmarks, docs and screenshots out), editable, as
#    ./dev.sh installs it: the app finds templates/ and static/ next to its package
COPY pyproject.toml setup.py README.md ./
COPY mpmcore ./mpmcore
COPY mpmlab ./mpmlab
COPY templates ./templates
COPY static ./static
RUN pip install --no-deps --no-build-isolation -e . \
    && python -m mpmlab.vendor \
    && rm -rf node_modules
USER mpmlab
EXPOSE 8000
# Bound to 0.0.0.0, the dashboard needs a token chosen by the user, read from MPMLAB_TOKEN (never on
# the command line, where `ps` would show it); without one it exits at once with a one-line error
# (docs/security.md). The URL it prints shows a token you chose redacted. Exec form: mpmlab is the
# container's main process and gets docker's SIGTERM (a clean shutdown that stops the embedded core
# and the traffic runner by their pids).
CMD ["mpmlab", "--host", "0.0.0.0"]
