"""attninf.pipelines: Dask graphs that run the attninf core over a Parquet corpus.
Only this subpackage imports dask."""
