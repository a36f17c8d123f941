from tests.storage.conftest import s3_endpoint  # noqa: F401  (the moto S3 server process)
