# The two set-up commands of the README.
.PHONY: demo test install

PIP_ENV = HNSWLIB_NO_NATIVE=1 CXXFLAGS="-march=x86-64-v3"
# Written by `make install`; `make demo` reinstalls only when pyproject.toml is newer (git ignores it).
INSTALL_STAMP = .install.stamp

# Always installs (editable, every extra).
install:
	$(PIP_ENV) pip install torch==2.13.0
	$(PIP_ENV) pip install -e ".[all,dev]"
	@touch $(INSTALL_STAMP)

$(INSTALL_STAMP): pyproject.toml
	$(MAKE) install

# Install if needed, make demo data, scan it into a local tile table, build the balanced CSV (no server).
demo: $(INSTALL_STAMP)
	pytorch-smt-tools make-demo-data demo/
	pytorch-smt-tools catalog ingest demo/pairs.csv --patch-size 256 --nodata-class 0 --class-names demo/classes.csv --catalog demo/tiles.parquet
	pytorch-smt-tools build-balanced-dataset conf/examples/balanced_train.yaml

# Provision a PostGIS test database if needed, then ruff, mypy and pytest.
test:
	bash scripts/test.sh
