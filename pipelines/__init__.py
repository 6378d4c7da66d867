"""attninf.pipelines: the stages that run over a whole corpus.

score (in this process, or units spread over a Dask cluster), select and
mix (Dask's threaded scheduler over the files), compare (proxy trainings
with attninf.train). Dask is imported inside the functions that use it,
so `import attninf` and the scorer work without it."""
