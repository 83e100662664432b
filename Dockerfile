# The mss image: one image, one role per container (`mss run --role …`, see docker-compose.yml).
# Debian bookworm + Python 3.11, Dovecot and SoftHSM2 from Debian, Python dependencies pinned by
# requirements.lock. Runs unprivileged: Dovecot is then started as the same user (no vmail
# switch), so every listener uses a port >= 1024 and the compose file maps 25/587/465/993/443.
FROM python:3.11-slim-bookworm

ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends \
      dovecot-imapd dovecot-lmtpd dovecot-sqlite dovecot-pgsql dovecot-sieve dovecot-managesieved \
      dovecot-fts-xapian poppler-utils unzip softhsm2 openssl ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/mss --shell /usr/sbin/nologin mss \
 && install -d -o mss -g mss -m 0750 /var/lib/mss

WORKDIR /opt/mss
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock
COPY pyproject.toml README.md ./
COPY core ./core
COPY certs ./certs
COPY trust_space ./trust_space
COPY mailformat ./mailformat
COPY spool ./spool
COPY peers ./peers
COPY mailstore ./mailstore
COPY gateway ./gateway
COPY webmail ./webmail
COPY mss ./mss
RUN pip install --no-cache-dir --no-deps . && rm -rf /opt/mss/build

ENV MSS_DATA_DIR=/var/lib/mss \
    MSS_LISTEN_ADDRESS=0.0.0.0 \
    PYTHONUNBUFFERED=1
USER mss
VOLUME ["/var/lib/mss"]
EXPOSE 2525 5870 4650 1143 9930 4190 8443 9100
ENTRYPOINT ["mss"]
CMD ["run", "--role", "all"]
