# Two commands on a fresh machine: `make demo` and `make test` (both create .venv when needed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# A second environment with the ROS 2 Jazzy wheels (one distro per environment: both wheel sets
# install the same module names); `make test` runs the real-rclpy tests in it too.
JAZZY_VENV := .venv-jazzy
JAZZY_BIN := $(JAZZY_VENV)/bin
JAZZY_STAMP := $(JAZZY_VENV)/.installed
# The vehicle install: `pip install .` alone (no torch; exported .onnx models on ONNX Runtime) with
# the ROS 2 Jazzy wheels; `make test` runs replay and the node in it with torch absent.
RUNTIME_VENV := .venv-runtime
RUNTIME_BIN := $(RUNTIME_VENV)/bin
RUNTIME_STAMP := $(RUNTIME_VENV)/.installed
DEMO_OUT ?= demo_out

.PHONY: demo test test-quick ros ros-jazzy runtime browser bench venv clean

venv: $(STAMP)

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[train,export,xtf,peer,gis,test]'
	touch $(STAMP)

$(JAZZY_STAMP): setup.py
	test -x $(JAZZY_BIN)/python || $(PYTHON) -m venv $(JAZZY_VENV)
	$(JAZZY_BIN)/python -m pip install -q --upgrade pip
	$(JAZZY_BIN)/python -m pip install -q -e '.[train,xtf,test]'
	touch $(JAZZY_STAMP)

# Editable, so the tests run the working tree's code; the dependencies are exactly `pip install .`'s.
$(RUNTIME_STAMP): setup.py
	test -x $(RUNTIME_BIN)/python || $(PYTHON) -m venv $(RUNTIME_VENV)
	$(RUNTIME_BIN)/python -m pip install -q --upgrade pip
	$(RUNTIME_BIN)/python -m pip install -q -e .
	touch $(RUNTIME_STAMP)

# ROS 2 wheels from PyPI + vision_msgs built from its .msg files (cached; see README): Kilted into
# .venv, Jazzy into .venv-jazzy. A failed build does not stop the tests: the real-rclpy tests then
# skip and say why.
ros: $(STAMP)
	-$(BIN)/python -m mine_jepa_ros.interfaces.build --distro kilted

ros-jazzy: $(JAZZY_STAMP)
	-$(JAZZY_BIN)/python -m mine_jepa_ros.interfaces.build --distro jazzy

runtime: $(RUNTIME_STAMP)
	-$(RUNTIME_BIN)/python -m mine_jepa_ros.interfaces.build --distro jazzy

# Chromium from Debian's packages for the browser test of `mine-jepa report` (driven by Playwright,
# from the test extra); without it (no root, no apt) that test skips and says why.
browser:
	-command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
		echo "make browser: could not install chromium: the report's browser test will skip"

demo: $(STAMP)
	$(BIN)/python -m mine_jepa_ros.tools.demo --out $(DEMO_OUT)

test: $(STAMP) ros ros-jazzy runtime browser
	$(BIN)/python -m pytest -q
	@echo "== the real-rclpy tests (marker ros) again, under ROS 2 Jazzy in $(JAZZY_VENV) =="
	$(JAZZY_BIN)/python -m pytest -q -m ros

# The quick subset (no slow tests; about half a minute).
test-quick: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP) runtime
	$(BIN)/mine-jepa bench --runtime-venv $(RUNTIME_VENV)

clean:
	rm -rf $(DEMO_OUT) build *.egg-info
