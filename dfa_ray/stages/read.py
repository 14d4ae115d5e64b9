"""Schema-v1 datasets (local or ``s3://``) as Ray datasets, through the same file listing as the readers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dfa_ray import storage
from dfa_ray.data.records import dataset_files


def read_parquet(uri: str, columns: Sequence[str]) -> Any:
    """``ray.data.read_parquet`` over the dataset's ``*.parquet`` files, on the filesystem ``uri`` names."""
    import ray

    files = dataset_files(uri)
    filesystem, _ = storage.resolve(files[0])
    paths = [storage.resolve(f)[1] for f in files]
    return ray.data.read_parquet(paths, filesystem=filesystem, columns=list(columns))
