# What the services image runs on: the workspace image (Debian bookworm from debootstrap) with
# Debian's Python 3.11, the run-time closure of this machine's venv and the embedding models.  It
# changes only when the venv does; deploy/services/Dockerfile puts the code on top.  No registry
# and no pip: scripts/build_images.sh (services/stack/compose_images.py) stages the context and
# builds this with BASE = the workspace image's id:
#   site-packages/  the distributions the services need (services/stack/venv_closure.py)
#   models/         the embedding model, reassembled and checked (services/dedup/model_assets.py)
ARG BASE=ise-workspace:latest
FROM ${BASE}

# Settings first: each step after the COPYs commits a layer over gigabytes, which takes seconds.
ENV PYTHONUNBUFFERED=1 PYTHONPATH=/opt/ise HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ISE_MODEL_CACHE=/models
WORKDIR /opt/ise
ENTRYPOINT ["ise"]
CMD ["--help"]

COPY site-packages/ /usr/local/lib/python3.11/dist-packages/
COPY models/ /models/
# The `ise` command (its code comes with ise-services), and a check that the closure imports here.
RUN set -eux; \
    printf '#!/usr/bin/python3\nimport sys\n\nfrom services.cli.main import main\n\nsys.exit(main())\n' \
      >/usr/local/bin/ise; \
    chmod 0755 /usr/local/bin/ise; \
    python3 -c 'import aiokafka, docker, grpc, redis, sentence_transformers, torch'
