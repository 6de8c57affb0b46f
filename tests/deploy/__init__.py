"""Checks of what operators deploy: deploy/, the Dockerfile and .dockerignore.

There is no Docker engine in CI, so nothing is started. Instead the files are parsed
and cross-checked; the MinIO bootstrap script runs against a fake ``mc``; the AWS
examples go through botocore's own validators and through moto; and
``docker compose config`` and ``kubectl kustomize`` run whenever they are installed
(skipped, with the reason, when they are not).
"""
