# smt-tools with the [dask] extra: the image of the Dask scheduler and workers of
# `docker compose --profile dask up` (docker-compose.yml). rasterio, pyproj and shapely wheels
# carry their own GDAL/PROJ/GEOS, so a slim Python base is enough.
FROM python:3.11-slim
WORKDIR /opt/smt-tools
COPY pyproject.toml README.md ./
COPY smt_tools ./smt_tools
# Workers that embed (embed --scheduler) need the [embed] extra too: build with
#   docker compose build --build-arg SMT_EXTRAS=dask,embed
ARG SMT_EXTRAS=dask
RUN pip install --no-cache-dir ".[${SMT_EXTRAS}]"
# workers may start DataLoader reader processes (embeddings.num_workers)
ENV DASK_DISTRIBUTED__WORKER__DAEMON=False
