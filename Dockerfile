# mpmlab: the dashboard with its embedded server core.
#
#   docker build -t mpmlab .
#   docker run --rm -p 127.0.0.1:8000:8000 --shm-size 256m --init -e MPMLAB_TOKEN=change-me-please mpmlab
#   then open http://127.0.0.1:8000/?token=change-me-please once (it sets the control cookie)
#
# The same steps as `./dev.sh setup` (pip install of the project, `npm ci` from the lock file, the
# front-end files copied into static/vendor by `python -m app.vendor`) without the Debian packages
# the tests compare against. Every option of `mpmlab dashboard` can be given as an environment
# variable of the same name (MPMLAB_PORT, MPMLAB_ATTACH, ...; see docs/ecosystem.md).

# -- front-end libraries, from package-lock.json ------------------------------------------------
FROM node:20-bookworm-slim AS frontend
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error

# -- the application --------------------------------------------------------------------------------
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /opt/mpmlab
COPY . .
COPY --from=frontend /src/node_modules ./node_modules
# Editable, as ./dev.sh installs it: the app finds templates/ and static/ next to its package.
RUN pip install -e . \
    && python -m app.vendor \
    && rm -rf node_modules \
    && useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin mpmlab
USER mpmlab
EXPOSE 8000
# Bound to 0.0.0.0, the dashboard needs a token chosen by the user (a generated one is refused there:
# docs/security.md), hence MPMLAB_TOKEN is required.
# exec: mpmlab is the container's main process and gets docker's SIGTERM (uvicorn turns it into
# a clean shutdown that stops the embedded core and the traffic runner by their pids).
CMD ["sh", "-c", "exec mpmlab --host 0.0.0.0 --token \"${MPMLAB_TOKEN:?set MPMLAB_TOKEN to a secret of 8 or more characters}\""]
