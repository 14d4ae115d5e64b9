"""Schema-v1 datasets (local or ``s3://``) as Ray datasets, through the same file listing as the readers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dfa_ray import storage
from dfa_ray.data.records import dataset_files


def read_parquet(uri: str, columns: Sequence[str]) -> Any:
    """``ray.data.read_parquet`` over the dataset's ``*.parquet`` files, on the filesystem ``uri`` names.

    Every Ray dataset of the project starts here, so this is also where Ray Data's retry of failed
    reads and writes is switched off (a dataset keeps the context it was created with). S3 requests
    already retry with backoff in the client, as often as ``AWS_MAX_ATTEMPTS`` allows (see
    ``storage``); Ray's loop around that multiplies the bound. Measured with the store down and
    AWS_MAX_ATTEMPTS=2, a label write failed after 173 s with Ray's retries and after 1 s without.
    """
    import ray

    ray.data.DataContext.get_current().retried_io_errors = []
    files = dataset_files(uri)
    filesystem, _ = storage.resolve(files[0])
    paths = [storage.resolve(f)[1] for f in files]
    return ray.data.read_parquet(paths, filesystem=filesystem, columns=list(columns))
