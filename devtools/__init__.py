"""Tools for working on the gateway, kept out of its package (and so out of the wheel and
the Docker image): ``gateway dev`` (``dev``), an in-process S3 for it, the tests and the
benchmarks (``s3``, moto in server mode), the browser demo (``demo``) and ``free_port``.

Importable from a source checkout: the editable install (``make dev``, ``make test``)
puts the checkout on ``sys.path``, and pytest and the benchmarks run from it.
"""
