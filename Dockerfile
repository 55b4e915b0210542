# One image for every service; the command picks the service (python -m <service>).
FROM python:3.11-slim AS build
ENV UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 herald
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY libs ./libs
COPY gateway ./gateway
COPY user_service ./user_service
COPY template_service ./template_service
COPY email_service ./email_service
COPY push_service ./push_service
COPY dlq_service ./dlq_service
COPY devtools ./devtools
ENV PATH="/app/.venv/bin:$PATH" PYTHONUNBUFFERED=1 HOST=0.0.0.0 LOG_FORMAT=json \
    ENVIRONMENT=production
USER herald
# Overridden per service: python -m gateway | user_service | template_service | ...
CMD ["python", "-m", "gateway"]
