# The image docker-compose.yaml runs: the official Airflow image plus the audit library's runtime
# requirements, installed once at build time (reproducible, no network at container start).
FROM apache/airflow:3.3.2
# Runtime pins only: requirements.txt's test and benchmark tools (from its "# tests" line on) stay out.
COPY requirements.txt /tmp/requirements.txt
RUN sed '/^# tests/,$d' /tmp/requirements.txt > /tmp/runtime-requirements.txt \
 && pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /tmp/runtime-requirements.txt
