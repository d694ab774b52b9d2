# Two commands set everything up on a fresh machine: `make smoke` and `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install render-deps smoke test test-fast clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The page `dvc plots show` writes, with Vega inlined so that it opens offline (.dvc/config).
PLOTS_PAGE := .dvc/plots.html
$(PLOTS_PAGE): $(STAMP) workflow/plots/offline_template.py
	$(PY) workflow/plots/offline_template.py $@

install: $(STAMP) $(PLOTS_PAGE)

# MuJoCo's software renderer for the rollout videos (render job), when it is missing:
# Debian's libosmesa6, with apt-get when running as root; otherwise a note (the render job then
# stops with one line saying what to install, or to set render.enabled: false in params.yaml).
render-deps:
	@ldconfig -p 2>/dev/null | grep -q libOSMesa || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libosmesa6 || \
	    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libosmesa6; }; }; } || \
	echo "note: no OSMesa library found; install libosmesa6 for the videos (or set render.enabled: false)"

# The quick experiment: MT10 at a tiny budget, D2R and MT-SAC, 2 seeds.
smoke: install render-deps
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/snakemake --cores all reports/smoke.html

# The whole test suite (what CI runs: .ci/run).
test: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q

# For development: the tests not marked slow (the end-to-end runs left out; README "Tests").
test-fast: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q -m "not slow"

clean:
	rm -rf .snakemake results reports/*.html reports/*.timing.json reports/curves/*.csv metrics/*.json logs benchmarks/runs
