# syntax=docker/dockerfile:1
ARG PYTHON=3.11
FROM python:${PYTHON}-slim AS builder
WORKDIR /src
COPY requirements.txt .
RUN --mount=type=cache,target=/root/.cache/pip pip wheel -r requirements.txt -w /wheels
FROM busybox AS tests
COPY --from=builder /wheels /wheels
RUN echo "never built for the default target"
FROM python:${PYTHON}-slim
ARG PYTHON
ENV APP_HOME=/app PYTHONDONTWRITEBYTECODE=1
WORKDIR $APP_HOME
COPY --from=builder /wheels /wheels
COPY --chown=1000:1000 --exclude=*.pyc . .
COPY <<EOF /etc/app.conf
python=${PYTHON}
EOF
USER 1000
EXPOSE 5000
CMD ["python", "app.py"]
