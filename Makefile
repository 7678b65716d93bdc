# Two commands on a fresh machine: `make demo` and `make test` (both create .venv when needed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_out

.PHONY: demo test ros bench venv clean

venv: $(STAMP)

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[xtf,export,test]'
	touch $(STAMP)

# ROS 2 Kilted wheels from PyPI + vision_msgs built from its .msg files (cached; see README).
# A failed build does not stop the tests: the real-rclpy tests then skip and say why.
ros: $(STAMP)
	-$(BIN)/python -m mine_jepa_ros.interfaces.build

demo: $(STAMP)
	$(BIN)/python -m mine_jepa_ros.tools.demo --out $(DEMO_OUT)

test: $(STAMP) ros
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/mine-jepa bench

clean:
	rm -rf $(DEMO_OUT) build *.egg-info
